//! A run's result: a table for people and one JSON line for scripts.

use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    rows: Vec<(&'static str, String)>,
    json: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        let mut json = Map::new();
        json.insert("scenario".into(), scenario.into());
        Report {
            scenario,
            rows: Vec::new(),
            json,
        }
    }

    /// Adds one figure: `key` in the JSON line, `label` in the table.
    pub fn add(&mut self, key: &str, label: &'static str, value: impl Into<Value>) -> &mut Self {
        let value = value.into();
        let shown = match &value {
            Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or_default()),
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        self.rows.push((label, shown));
        self.json.insert(key.into(), value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key)
    }

    pub fn json_line(&self) -> String {
        Value::Object(self.json.clone()).to_string()
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = format!("payrelay bench {}\n", self.scenario);
        for (label, value) in &self.rows {
            out.push_str(&format!("  {label:<width$}  {value}\n"));
        }
        out
    }

    /// The table, then the JSON line last (scripts take the last line starting with `{`).
    pub fn print(&self) {
        print!("{}", self.table());
        println!("{}", self.json_line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_carry_the_same_figures() {
        let mut report = Report::new("fanout");
        report
            .add("delivered", "delivered", 1000)
            .add("p99_ms", "p99 (ms)", 1.26)
            .add("rss_kib", "server RSS", Value::Null);
        let table = report.table();
        assert!(table.contains("delivered   1000"), "{table}");
        assert!(table.contains("p99 (ms)    1.3"), "{table}");
        assert!(table.contains("server RSS  -"), "{table}");
        let json: Value = serde_json::from_str(&report.json_line()).unwrap();
        assert_eq!(json["scenario"], "fanout");
        assert_eq!(json["delivered"], 1000);
        assert_eq!(json["p99_ms"], 1.26);
    }
}
