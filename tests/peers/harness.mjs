// What every self-checking peer script shares: required environment variables, an
// overall deadline, and the scenario runner whose `ok` / `FAIL` lines the Rust tests
// print and whose exit code they check.

/** The value of a required environment variable; exits 2 when it is missing. */
export function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`FAIL: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Ends the process with a failure if the script is still running after `seconds`. */
export function deadline(seconds) {
  setTimeout(() => {
    console.error(`FAIL: overall timeout of ${seconds}s exceeded`);
    process.exit(1);
  }, seconds * 1000).unref();
}

/**
 * Runs each scenario in order (only those whose name contains PAYRELAY_ONLY, if set, and
 * none whose name contains PAYRELAY_SKIP, if set),
 * prints `ok <name>` or `FAIL <name>: <why>`, and exits 1 if any failed, or if none ran:
 * a PAYRELAY_ONLY left in the environment that matches nothing must not pass as success.
 */
export async function runScenarios(scenarios) {
  const only = process.env.PAYRELAY_ONLY;
  const skip = process.env.PAYRELAY_SKIP;
  let failed = 0;
  let ran = 0;
  for (const [name, run] of Object.entries(scenarios)) {
    if (only && !name.includes(only)) continue;
    if (skip && name.includes(skip)) continue;
    ran++;
    try {
      await run();
      console.log(`ok   ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${e?.stack ?? JSON.stringify(e)}`);
    }
  }
  if (ran === 0) {
    console.log(`FAIL no scenario ran: PAYRELAY_ONLY=${JSON.stringify(only)} matches none of ${Object.keys(scenarios).length}`);
    process.exit(1);
  }
  process.exit(failed ? 1 : 0);
}
