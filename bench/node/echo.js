// Echo server on Node's `ws`, as its README writes one: every message goes back as it came.
// Usage: node echo.js [PORT]; prints "ws listening on ws://127.0.0.1:PORT/" once listening.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
// perMessageDeflate is off by default in ws; said here so the comparison is plain.
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('listening', () => {
  console.log(`ws listening on ws://127.0.0.1:${wss.address().port}/`);
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
