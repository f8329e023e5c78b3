const socket = new WebSocket('ws://localhost:8080');

socket.onopen = () => {
  console.log('✅ Connected to local server');
  socket.send('Hello from browser!');
};

socket.onmessage = event => {
  console.log('📨 Server says:', event.data);
};

socket.onclose = () => {
  console.log('❌ Disconnected');
};

socket.onerror = error => {
  console.error('⚠️ Error:', error);
};
