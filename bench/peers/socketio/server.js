// A Socket.IO 4 chat room node sharing its rooms with other nodes through Redis, as the
// Socket.IO documentation sets one up (@socket.io/redis-adapter over node-redis v4), for
// bench/crossnode.sh and `duplex bench --crossnode --protocol socketio`.
//
// Usage: node server.js PORT REDIS_URL
// Prints "socket.io listening on ws://127.0.0.1:PORT/socket.io/ (redis REDIS_URL)" once ready.
//
// The chat semantic is the one the benchmark gives duplex's hub: a client emits `join` (a room
// name) and `send` ({room, text}); the node broadcasts `message` {room, from, text, time} with
// `io.to(room).emit(...)`, which goes through the adapter, so the room's members on every node
// get it, the sender included (as duplex.v1 sends a message to its sender too).
//
// Settings: WebSocket transport only (no HTTP long-polling), permessage-deflate off (the
// default of Socket.IO 4 and of duplex), bufferutil installed and the upgrade request dropped
// after the handshake, as the "Performance tuning" page of the Socket.IO docs advises.
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

async function main() {
  const port = Number(process.argv[2] || 0);
  const redisUrl = process.argv[3] || 'redis://127.0.0.1:6379';

  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  for (const client of [pubClient, subClient]) {
    client.on('error', (err) => console.error(`redis: ${err.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    // Up to 10,000 joins arrive at once while a benchmark connects.
    connectTimeout: 60000,
    adapter: createAdapter(pubClient, subClient),
  });
  io.engine.on('connection', (rawSocket) => {
    rawSocket.request = null;
  });

  io.on('connection', (socket) => {
    const from = `guest-${socket.id}`;
    socket.on('join', (room, ack) => {
      if (typeof room !== 'string' || room.length === 0 || room.length > 64) return;
      socket.join(room);
      if (typeof ack === 'function') ack();
    });
    socket.on('send', (msg) => {
      if (!msg || typeof msg.room !== 'string' || typeof msg.text !== 'string') return;
      if (!socket.rooms.has(msg.room)) return;
      io.to(msg.room).emit('message', {
        room: msg.room,
        from,
        text: msg.text,
        time: Date.now(),
      });
    });
  });

  httpServer.listen(port, '127.0.0.1', () => {
    const { port: bound } = httpServer.address();
    console.log(`socket.io listening on ws://127.0.0.1:${bound}/socket.io/ (redis ${redisUrl})`);
  });

  const stop = () => {
    io.close();
    Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
