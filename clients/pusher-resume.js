/*
 * pusher-resume.js: recovery for unmodified pusher-js against payrelay.
 *
 * payrelay adds `position` to every Pusher event frame and to
 * `pusher_internal:subscription_succeeded`, and accepts `resume_from` in
 * `pusher:subscribe`: the server then replays, in order and before any live event,
 * exactly what the channel published after that position, or sends `pusher:resume_failed`
 * on the channel when it cannot (the position is older than the history window, or the
 * history was lost). pusher-js neither reads nor sends those fields; this helper does:
 *
 *   - it remembers, per channel, the position of the last frame the socket received
 *     (read from the raw frames of pusher-js's current transport), and
 *   - whenever pusher-js (re)subscribes, typically after reconnecting, it adds
 *     `resume_from` with that position to the `pusher:subscribe` pusher-js sends.
 *
 * Usage (browser: <script src="pusher-resume.js"></script> defines PusherResume;
 * Node / bundlers: require or import it):
 *
 *   const pusher = new Pusher(key, options);
 *   PusherResume.enableResume(pusher);
 *   const channel = pusher.subscribe('orders');
 *   channel.bind('order-paid', handle);        // missed events arrive here, in order
 *   channel.bind('pusher:resume_failed', () => reloadOrdersFromTheBackend());
 *
 * Call enableResume before the first subscribe. Positions live in memory: a page reload
 * starts afresh (pass `positions`, a Map you persist yourself, to carry them over).
 * Tested with pusher-js 8 (tests/peers/pusher_js_recovery.mjs).
 */
(function (root, factory) {
  if (typeof module === 'object' && module.exports) module.exports = factory();
  else root.PusherResume = factory();
})(typeof self !== 'undefined' ? self : this, function () {
  function enableResume(pusher, options) {
    var positions = (options && options.positions) || new Map();
    var hooked = null;

    // Read positions from the raw frames of the current transport (pusher-js keeps only
    // event, channel, data and user_id of a frame).
    function hook() {
      var manager = pusher.connection;
      var transport = manager.connection && manager.connection.transport;
      if (!transport || transport === hooked) return;
      hooked = transport;
      transport.bind('message', function (message) {
        var frame;
        try {
          frame = JSON.parse(message.data);
        } catch (e) {
          return;
        }
        if (frame && typeof frame.channel === 'string' && typeof frame.position === 'string') {
          positions.set(frame.channel, frame.position);
        } else if (frame && frame.event === 'pusher:resume_failed' && typeof frame.channel === 'string') {
          // Start again from where the server now stands.
          try {
            var data = JSON.parse(frame.data);
            if (data && typeof data.position === 'string') positions.set(frame.channel, data.position);
          } catch (e) {}
        }
      });
    }
    // pusher-js subscribes on `connected`, before this runs; the answers cannot have
    // arrived yet, so hooking here sees them all.
    pusher.connection.bind('state_change', function (states) {
      if (states.current === 'connected') hook();
    });
    hook();

    // Add `resume_from` to the subscribe pusher-js sends.
    var send = pusher.send_event.bind(pusher);
    pusher.send_event = function (name, data, channel) {
      if (name === 'pusher:subscribe' && data && positions.has(data.channel)) {
        var extended = {};
        for (var key in data) extended[key] = data[key];
        extended.resume_from = positions.get(data.channel);
        data = extended;
      }
      return send(name, data, channel);
    };

    // An unsubscribed channel starts afresh next time.
    var unsubscribe = pusher.unsubscribe.bind(pusher);
    pusher.unsubscribe = function (channelName) {
      positions.delete(channelName);
      return unsubscribe(channelName);
    };

    return {
      /** The position of the last event received on `channel`, if any. */
      position: function (channel) {
        return positions.get(channel);
      },
      positions: positions,
    };
  }

  return { enableResume: enableResume };
});
