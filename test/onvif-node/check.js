// Checks a camsim ONVIF device with the npm onvif client (a client nobody in this project wrote).
// Usage: node check.js HOST PORT USER  (the password is read from the first line of stdin, so it never
// appears in a process listing). Prints one JSON line when connected (device information, profiles,
// stream URI), then one JSON line per event received, and exits after the first event or after 20 s.
'use strict';
const { Cam } = require('onvif');

const [host, port, user] = process.argv.slice(2);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const password = input.split('\n')[0];
  const fail = (what, err) => {
    console.log(JSON.stringify({ error: what + ': ' + (err && err.message ? err.message : String(err)) }));
    process.exit(1);
  };
  const timer = setTimeout(() => fail('timeout', 'no event within 20 s'), 20000);
  new Cam({ hostname: host, port: Number(port), username: user, password, timeout: 15000 }, function (err) {
    if (err) return fail('connect', err);
    const cam = this;
    cam.getDeviceInformation((err, info) => {
      if (err) return fail('getDeviceInformation', err);
      cam.getProfiles((err, profiles) => {
        if (err) return fail('getProfiles', err);
        cam.getStreamUri({ protocol: 'RTSP', profileToken: profiles[0].$.token }, (err, stream) => {
          if (err) return fail('getStreamUri', err);
          cam.on('eventsError', (e) => console.log(JSON.stringify({ eventsError: String(e && e.message || e) })));
          cam.on('event', (msg) => {
            const topic = msg.topic && (msg.topic._ || msg.topic);
            let state = null;
            try {
              const item = msg.message.message.data.simpleItem;
              state = (Array.isArray(item) ? item[0] : item).$.Value;
            } catch (e) { /* no data */ }
            console.log(JSON.stringify({ event: String(topic), state }));
            clearTimeout(timer);
            process.exit(0);
          });
          console.log(JSON.stringify({
            connected: true,
            manufacturer: info.manufacturer,
            model: info.model,
            firmware: info.firmwareVersion,
            serial: info.serialNumber,
            profiles: profiles.map((p) => p.$.token),
            uri: stream.uri,
          }));
        });
      });
    });
  });
});
