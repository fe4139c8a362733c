// The tic-tac-toe page: a lobby with a chat and a match board, on the
// maple JavaScript client (maple.js). Routes: docs/tictactoe.md.
import { Client, Ret } from './maple.js';

const Cmd = {
  Login: 2, // the demo game's login
  Lobby: 100,
  Say: 101,
  Challenge: 102,
  Move: 103,
  Resign: 104,
  State: 105,
  Players: 107,
  Chat: 110,
  Presence: 111,
  Match: 112,
};

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + (params.get('ws') || '/ws');
const NAME_KEY = 'maple-tictactoe-name'; // per tab: sessionStorage

let me = sessionStorage.getItem(NAME_KEY) || '';
let players = [];
let match = null;
let turnEnds = 0; // performance.now() when the player on turn forfeits
let turnTotal = 30000;

const client = new Client(wsURL, {
  // After every (re)connect: log in again and refresh the lobby and board.
  onOpen: async ({ request }) => {
    document.body.dataset.connects = String(client.connects);
    if (me) await enter(request);
  },
});

// enter logs in as me and enters the lobby, with req (the client's request,
// or the onOpen hook's).
async function enter(req) {
  const login = await req(Cmd.Login, me);
  if (login.ret !== Ret.OK) throw new Error(`login refused (ret ${login.ret})`);
  const lobby = await req(Cmd.Lobby);
  if (lobby.ret !== Ret.OK) throw new Error(`lobby refused (ret ${lobby.ret})`);
  const l = lobby.json();
  showLobby();
  renderPlayers(l.players);
  renderMatch(l.match || null);
}

// Connection state.
const stateText = { connecting: 'connecting…', open: 'connected', reconnecting: 'reconnecting…', closed: 'offline' };
client.on('state', (s) => {
  $('conn').dataset.state = s;
  $('conn-text').textContent = stateText[s] || s;
  $('footer-conn').textContent = s === 'open' ? `connected to ${wsURL}` : stateText[s] || s;
});
client.on('error', (err) => console.warn('maple:', err));

// Pushes.
client.onPush(Cmd.Chat, (f) => addChat(f.json()));
// A presence push says the lobby changed; pushes of handlers running side
// by side may come in another order than they were made, so ask who is
// there now: a connection's requests run in order, and the reply to the
// last one is the lobby as it is.
client.onPush(Cmd.Presence, async () => {
  try {
    const r = await client.request(Cmd.Players);
    if (r.ret === Ret.OK) renderPlayers(r.json().players);
  } catch (err) {
    console.warn('players:', err);
  }
});
client.onPush(Cmd.Match, (f) => renderMatch(f.json()));

// Login.
$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('name').value.trim();
  if (!name) return;
  $('login-btn').disabled = true;
  $('login-error').textContent = '';
  me = name;
  try {
    await enter((cmd, body) => client.request(cmd, body));
    sessionStorage.setItem(NAME_KEY, me);
  } catch (err) {
    me = '';
    $('login-error').textContent = err.message;
  } finally {
    $('login-btn').disabled = false;
  }
});

function showLobby() {
  $('login-view').hidden = true;
  $('lobby-view').hidden = false;
  $('who').hidden = false;
  $('me').textContent = me;
  document.body.dataset.player = me;
}

// Chat.
$('chat').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  $('chat-input').value = '';
  try {
    await client.call(Cmd.Say, text);
  } catch (err) {
    toast(err.message);
  }
});

function addChat({ from, text }) {
  const log = $('chat-log');
  log.querySelector('.empty')?.remove();
  const div = document.createElement('div');
  div.className = 'msg' + (from === me ? ' mine' : '');
  div.dataset.from = from;
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  div.append(who, body);
  log.append(div);
  log.scrollTop = log.scrollHeight;
}

// Players.
function renderPlayers(list) {
  players = list || [];
  const ul = $('players');
  ul.replaceChildren();
  $('count').textContent = String(players.length);
  const iPlay = match && !match.winner;
  for (const p of players) {
    const li = document.createElement('li');
    li.dataset.name = p.name;
    const av = document.createElement('span');
    av.className = 'avatar';
    av.textContent = p.name.slice(0, 1).toUpperCase();
    av.style.background = colorOf(p.name);
    const name = document.createElement('span');
    name.className = 'pname';
    name.textContent = p.name;
    li.append(av, name);
    if (p.name === me) {
      li.append(tag('you'));
    } else if (p.busy) {
      li.append(tag('playing', 'busy'));
    } else {
      const b = document.createElement('button');
      b.className = 'challenge';
      b.textContent = 'Challenge';
      b.disabled = Boolean(iPlay);
      b.addEventListener('click', () => challenge(p.name, b));
      li.append(b);
    }
    ul.append(li);
  }
}

function tag(text, cls = '') {
  const s = document.createElement('span');
  s.className = 'tag ' + cls;
  s.textContent = text;
  return s;
}

function colorOf(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) % 360;
  return `hsl(${h} 45% 45%)`;
}

async function challenge(name, button) {
  button.disabled = true;
  try {
    const r = await client.call(Cmd.Challenge, name);
    renderMatch(r.json());
  } catch (err) {
    toast(err.reply ? err.reply.text() : err.message);
    button.disabled = false;
  }
}

// The board.
const SVG = {
  x: '<svg class="x" viewBox="0 0 100 100"><path d="M22 22L78 78M78 22L22 78"/></svg>',
  o: '<svg class="o" viewBox="0 0 100 100"><circle cx="50" cy="50" r="30"/></svg>',
};
document.querySelector('.mark-x').innerHTML = SVG.x;
document.querySelector('.mark-o').innerHTML = SVG.o;

const cells = [];
for (let i = 0; i < 9; i++) {
  const b = document.createElement('button');
  b.className = 'cell';
  b.dataset.cell = String(i);
  b.dataset.mark = '';
  b.disabled = true;
  b.setAttribute('aria-label', `cell ${i}`);
  b.addEventListener('click', () => move(i));
  $('board').append(b);
  cells.push(b);
}

function mySide(m) {
  if (!m) return '';
  return m.x === me ? 'x' : m.o === me ? 'o' : '';
}

function renderMatch(m) {
  if (m && match && m.id === match.id && m.moves < match.moves) return; // an older push
  match = m;
  const box = $('match');
  if (!m) {
    box.dataset.state = 'none';
    box.dataset.winner = '';
    cells.forEach((c) => { c.innerHTML = ''; c.dataset.mark = ''; c.disabled = true; c.classList.remove('win'); });
    $('status').textContent = 'Challenge a player from the lobby to start a match.';
    $('resign').hidden = true;
    $('again').hidden = true;
    turnEnds = 0;
    renderPlayers(players);
    return;
  }
  const over = Boolean(m.winner);
  const side = mySide(m);
  const myTurn = !over && side === m.turn;
  box.dataset.state = over ? 'over' : 'playing';
  box.dataset.winner = over ? m.winnerName || 'draw' : '';
  box.dataset.id = m.id;
  $('px').textContent = m.x;
  $('po').textContent = m.o;
  $('side-x').classList.toggle('turn', !over && m.turn === 'x');
  $('side-o').classList.toggle('turn', !over && m.turn === 'o');
  const line = new Set(m.line || []);
  cells.forEach((c, i) => {
    const mark = m.board[i] === '.' ? '' : m.board[i];
    if (c.dataset.mark !== mark) {
      c.dataset.mark = mark;
      c.innerHTML = mark ? SVG[mark] : '';
    }
    c.disabled = !myTurn || mark !== '';
    c.classList.toggle('win', line.has(i));
  });
  $('resign').hidden = over || !side;
  $('again').hidden = !over;
  if (over) {
    turnEnds = 0;
    tickTimer();
    $('status').textContent = outcome(m);
  } else {
    turnTotal = Math.max(turnTotal, m.left);
    turnEnds = performance.now() + m.left;
    tickTimer();
  }
  renderPlayers(players);
}

function outcome(m) {
  if (m.winner === 'draw') return 'A draw. Well played!';
  const loser = m.winner === 'x' ? m.o : m.x;
  const who = m.winnerName === me ? 'You win' : `${m.winnerName} wins`;
  switch (m.reason) {
    case 'timeout':
      return `${who}: ${loser === me ? 'you' : loser} ran out of time.`;
    case 'resign':
      return `${who}: ${loser === me ? 'you' : loser} resigned.`;
    default:
      return `${who}!`;
  }
}

function tickTimer() {
  const bar = $('timer-bar');
  if (!match || match.winner || !turnEnds) {
    bar.style.width = '0';
    return;
  }
  const left = Math.max(0, turnEnds - performance.now());
  bar.style.width = `${(100 * left) / turnTotal}%`;
  bar.classList.toggle('low', left < 10000);
  const secs = Math.ceil(left / 1000);
  const side = mySide(match);
  const onTurn = match.turn === 'x' ? match.x : match.o;
  $('status').textContent = side === match.turn ? `Your turn · ${secs} s` : `Waiting for ${onTurn} · ${secs} s`;
}
setInterval(tickTimer, 250);

async function move(i) {
  cells.forEach((c) => { c.disabled = true; });
  try {
    const r = await client.call(Cmd.Move, String(i));
    renderMatch(r.json());
  } catch (err) {
    toast(err.reply ? err.reply.text() : err.message);
    if (match) renderMatch(match);
  }
}

$('resign').addEventListener('click', async () => {
  try {
    renderMatch((await client.call(Cmd.Resign)).json());
  } catch (err) {
    toast(err.reply ? err.reply.text() : err.message);
  }
});

let toastTimer = 0;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3000);
}

// Start: with a name from this tab's earlier visit, onOpen logs in again.
if (me) {
  showLobby();
} else {
  $('login-view').hidden = false;
  $('name').focus();
}
client.connect().catch((err) => console.warn('maple:', err));
