const WebSocket = require('ws');
const readline = require('readline');

// Connect to the WebSocket server
const socket = new WebSocket('ws://localhost:8080');

// Create a readline interface for user input
const rl = readline.createInterface({
  input: process.stdin,
  output: process.stdout,
});
let userName = '';

// Listen for messages from the server
socket.on('message', (message) => {
  console.log(`Message from server: ${message}`);
});

// Handle connection open
socket.on('open', () => {
  console.log('Connected to server');
  console.log('Please enter user name:')

  

  // Prompt user for input and send messages to the server
  rl.on('line', (input) => {
    if(!userName){
      console.log(`Welcome ${input}! You can start chatting now.`);
      userName = input;
      console.log('Type your message and press Enter to send:');
    }
    input = `${userName}: ${input}`;
    socket.send(input);
  });
});

// Handle connection closure
socket.on('close', () => {
  console.log('Disconnected from server');
  rl.close();
});

