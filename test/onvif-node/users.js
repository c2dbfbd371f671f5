// Checks a camsim ONVIF device's user management with the npm onvif client (a client nobody in this
// project wrote). Usage: node users.js HOST PORT USER; stdin holds the administrator's password on its
// first line and the password for the account to create on its second (never in a process listing).
// Prints one JSON line per step: get, create, delete (the account lists as "name:level"), then
// delete-fixed (the refusal of the built-in account "service"), and exits 0; {"error":…} and exit 1 on
// a failure.
'use strict';
const { Cam } = require('onvif');

const [host, port, user] = process.argv.slice(2);
let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => { input += d; });
process.stdin.on('end', () => {
  const [password, created] = input.split('\n');
  const fail = (what, err) => {
    console.log(JSON.stringify({ error: what + ': ' + (err && err.message ? err.message : String(err)) }));
    process.exit(1);
  };
  const timer = setTimeout(() => fail('timeout', 'not done within 30 s'), 30000);
  const names = (users) => users.map((u) => u.username + ':' + u.userLevel);
  new Cam({ hostname: host, port: Number(port), username: user, password, timeout: 15000 }, function (err) {
    if (err) return fail('connect', err);
    const cam = this;
    cam.getUsers((err, users) => {
      if (err) return fail('getUsers', err);
      console.log(JSON.stringify({ step: 'get', users: names(users) }));
      cam.createUsers([{ username: 'npmcheck', password: created, userLevel: 'User' }], (err, users) => {
        if (err) return fail('createUsers', err);
        console.log(JSON.stringify({ step: 'create', users: names(users) }));
        cam.deleteUsers(['npmcheck', 'installer'], (err, users) => {
          if (err) return fail('deleteUsers', err);
          console.log(JSON.stringify({ step: 'delete', users: names(users) }));
          cam.deleteUsers(['service'], (err) => {
            if (!err) return fail('deleteUsers', 'the built-in account was deleted');
            console.log(JSON.stringify({ step: 'delete-fixed', refused: String(err.message || err) }));
            clearTimeout(timer);
            process.exit(0);
          });
        });
      });
    });
  });
});
