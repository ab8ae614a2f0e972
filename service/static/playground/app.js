// GRAM Serve playground: plain JS, no build step, no libraries, nothing loaded from outside this server.
//
// A request goes through one Run object whose callbacks draw what arrives:
//   run.solution(solution, index)  one verified solution (renderSolution draws it)
//   run.progress(fields)           live fields for the status panel
//   run.done(response)             the final response (the non-streamed API's JSON body)
//   run.fail(message)              the API's error message
// The transport is the streamed API (postStream: "stream": true, Server-Sent Events read from fetch's
// body): run.solution for each solution or sample event as the engine verifies it, run.progress for each
// progress event (at most ten a second), then run.done with the done event's data, the answer: the
// solutions are then drawn again as the answer has them (final counts and order).
"use strict";

const TASKS = ["sudoku", "nqueens", "graph_coloring", "mnist"];
// The largest integer a JavaScript number holds exactly; seeds are sent and read as digit strings.
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

// Sudoku examples, graded by the sudoku task's tiers (model/tasks/sudoku.py: easy 36-45 givens, medium
// 28-35, hard = minimal puzzles that need guessing). Each has one solution; the shipped checkpoint solves
// all but the last at seed 0, width 32 (checked through the real service; the last shows what an answer
// the model does not reach looks like).
const SUDOKU_EXAMPLES = [
  { name: "Nearly done (79 givens)", puzzle: "534678912672195348198342567859761423426853791713924856961537284287419635345286.7." },
  { name: "Easy (39 givens)", puzzle: ".1...83..8..3471.694312..7536..1.24....4...1.12.7.5..927....4...8....931..95...62" },
  { name: "Medium (30 givens, the README's)", puzzle: "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79" },
  { name: "Hard (23 givens, minimal)", puzzle: "....8...7.7849..2...3..25...6.........486.1..5....9.3.....27..8......4....5......" },
  { name: "Too hard for this model (24 givens)", puzzle: ".1...8...8..3.7..69...2..75....1..4..9.4...13.2....6.....6..........4.3.4.9...7.." },
];

const GRAPH_EXAMPLES = [
  { name: "5-cycle, 3 colours, node 0 fixed", nodes: 5, colors: 3, edges: "0-1 1-2 2-3 3-4 4-0", fixed: "0:0" },
  { name: "Wheel W6 (hub 0), 4 colours", nodes: 6, colors: 4,
    edges: "0-1 0-2 0-3 0-4 0-5 1-2 2-3 3-4 4-5 5-1", fixed: "" },
  { name: "Cube graph, 2 colours", nodes: 8, colors: 2,
    edges: "0-1 1-2 2-3 3-0 4-5 5-6 6-7 7-4 0-4 1-5 2-6 3-7", fixed: "" },
  { name: "Petersen graph, 3 colours", nodes: 10, colors: 3,
    edges: "0-1 1-2 2-3 3-4 4-0 0-5 1-6 2-7 3-8 4-9 5-7 7-9 9-6 6-8 8-5", fixed: "" },
];
// Colour-blind-safe palette (Okabe-Ito), one per colour index 0..3.
const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#CC79A7"];
const PALETTE_NAMES = ["orange", "sky blue", "green", "pink"];

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
};
const SVG_NS = "http://www.w3.org/2000/svg";
const svg = (tag, attrs = {}) => {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
};

const state = { task: "sudoku", run: null };

// ---- the service's state (header line) --------------------------------------------------------------
async function checkService() {
  const line = $("service-state");
  try {
    const response = await fetch("readyz");
    const body = await response.json();
    if (response.ok) {
      line.textContent = `ready: ${body.models.join(", ")}`;
      line.className = "service-state ok";
      return;
    }
    line.textContent = `not ready (${body.status}${body.detail ? ": " + body.detail : ""}); retrying…`;
  } catch (err) {
    line.textContent = `service unreachable (${err.message}); retrying…`;
  }
  line.className = "service-state warn";
  setTimeout(checkService, 2000);
}

// ---- tabs ---------------------------------------------------------------------------------------------
function selectTask(task, focus = false) {
  state.task = task;
  for (const name of TASKS) {
    const tab = $(`tab-${name}`);
    const on = name === task;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${name}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  for (const node of document.querySelectorAll(".solve-only")) node.hidden = task === "mnist";
  $("run").textContent = task === "mnist" ? "Sample" : "Solve";
  clearResults();
  updateRequestPreview();
}

function setUpTabs() {
  for (const name of TASKS) {
    const tab = $(`tab-${name}`);
    tab.addEventListener("click", () => selectTask(name));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = TASKS[(TASKS.indexOf(state.task) + step + TASKS.length) % TASKS.length];
      selectTask(next, true);
      event.preventDefault();
    });
  }
}

// ---- Sudoku editor ------------------------------------------------------------------------------------
const sudokuCells = [];

function buildSudokuEditor() {
  const grid = $("sudoku-grid");
  for (let i = 0; i < 81; i++) {
    const r = Math.floor(i / 9), c = i % 9;
    const cell = el("input", {
      class: "cell", type: "text", inputmode: "numeric", maxlength: "1", autocomplete: "off",
      "aria-label": `row ${r + 1} column ${c + 1}`, "data-index": String(i),
    });
    cell.addEventListener("keydown", (event) => sudokuKey(event, i));
    cell.addEventListener("input", () => {  // phones: the soft keyboard sends input events, not keys
      const digit = cell.value.replace(/[^1-9]/g, "").slice(-1);
      cell.value = digit;
      sudokuChanged();
      if (digit) moveSudoku(i, 1);
    });
    cell.addEventListener("paste", (event) => {
      const text = (event.clipboardData || window.clipboardData).getData("text");
      if (text.replace(/\s/g, "").length >= 81) {
        event.preventDefault();
        setSudoku(text);
      }
    });
    cell.addEventListener("focus", () => cell.select());
    grid.append(cell);
    sudokuCells.push(cell);
  }
  const examples = $("sudoku-example");
  examples.append(el("option", { value: "", text: "— choose —" }));
  SUDOKU_EXAMPLES.forEach((ex, i) => examples.append(el("option", { value: String(i), text: ex.name })));
  examples.addEventListener("change", () => {
    if (examples.value !== "") setSudoku(SUDOKU_EXAMPLES[Number(examples.value)].puzzle);
  });
  $("sudoku-load").addEventListener("click", () => setSudoku($("sudoku-text").value));
  $("sudoku-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); setSudoku($("sudoku-text").value); }
  });
  $("sudoku-clear").addEventListener("click", () => { setSudoku(".".repeat(81)); examples.value = ""; });
}

function sudokuKey(event, i) {
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -9, ArrowDown: 9 };
  if (event.key in moves) {
    moveSudoku(i, moves[event.key]);
    event.preventDefault();
  } else if (/^[1-9]$/.test(event.key)) {
    sudokuCells[i].value = event.key;
    sudokuChanged();
    moveSudoku(i, 1);
    event.preventDefault();
  } else if (["0", ".", " ", "Backspace", "Delete"].includes(event.key)) {
    const wasEmpty = sudokuCells[i].value === "";
    sudokuCells[i].value = "";
    sudokuChanged();
    if (event.key === "Backspace" && wasEmpty) moveSudoku(i, -1);
    else if (event.key !== "Backspace" && event.key !== "Delete") moveSudoku(i, 1);
    event.preventDefault();
  } else if (event.key === "Enter") {
    event.preventDefault();
    $("request-form").requestSubmit();
  } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey) {
    event.preventDefault();  // anything else typed is not a digit
  }
}

function moveSudoku(i, step) {
  const next = i + step;
  if (next >= 0 && next < 81) sudokuCells[next].focus();
}

function setSudoku(text) {
  const chars = String(text).replace(/\s/g, "");
  if (chars.length !== 81) {
    showError(`A puzzle is 81 characters (digits, '.' or '0' for blanks); got ${chars.length}.`);
    return;
  }
  hideError();
  [...chars].forEach((ch, i) => { sudokuCells[i].value = /[1-9]/.test(ch) ? ch : ""; });
  sudokuChanged();
}

function sudokuString() {
  return sudokuCells.map((cell) => cell.value || ".").join("");
}

function sudokuChanged() {
  const puzzle = sudokuString();
  $("sudoku-text").value = puzzle;
  const givens = [...puzzle].filter((ch) => ch !== ".").length;
  $("sudoku-count").textContent = `${givens} givens`;
  updateRequestPreview();
}

// ---- N-Queens editor ----------------------------------------------------------------------------------
const queens = new Map();  // row -> column of each given queen

function buildQueensEditor() {
  const select = $("nqueens-n");
  for (let n = 4; n <= 12; n++) select.append(el("option", { value: String(n), text: `${n} x ${n}` }));
  select.value = "8";
  select.addEventListener("change", () => { queens.clear(); drawQueensEditor(); });
  $("nqueens-clear").addEventListener("click", () => { queens.clear(); drawQueensEditor(); });
  drawQueensEditor();
}

function boardSize() {
  return Number($("nqueens-n").value);
}

function drawQueensEditor() {
  const n = boardSize();
  const board = $("nqueens-board");
  board.replaceChildren();
  board.style.setProperty("--n", n);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const has = queens.get(r) === c;
      const square = el("button", {
        type: "button", class: `sq ${(r + c) % 2 ? "dark" : "light"}${has ? " queen given" : ""}`,
        "aria-label": `row ${r + 1} column ${c + 1}${has ? ", queen" : ""}`,
        "aria-pressed": String(has), "data-row": String(r), "data-col": String(c),
      });
      square.textContent = has ? "♛" : "";
      square.addEventListener("click", () => toggleQueen(r, c));
      square.addEventListener("keydown", (event) => {
        const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
        const move = moves[event.key];
        if (!move) return;
        const target = board.querySelector(`[data-row="${r + move[0]}"][data-col="${c + move[1]}"]`);
        if (target) target.focus();
        event.preventDefault();
      });
      board.append(square);
    }
  }
  const placed = [...queens.entries()].map(([r, c]) => `[${r}, ${c}]`).join(" ");
  $("nqueens-note").textContent = queens.size ? `given queens: ${placed}` : "no queen placed yet";
  updateRequestPreview();
}

function toggleQueen(r, c) {
  if (queens.get(r) === c) queens.delete(r);
  else queens.set(r, c);  // one queen a row: a second click in the row moves it
  drawQueensEditor();
  const square = $("nqueens-board").querySelector(`[data-row="${r}"][data-col="${c}"]`);
  if (square) square.focus();
}

// ---- Graph colouring editor ---------------------------------------------------------------------------
function buildGraphEditor() {
  const select = $("graph-example");
  GRAPH_EXAMPLES.forEach((ex, i) => select.append(el("option", { value: String(i), text: ex.name })));
  select.addEventListener("change", () => loadGraphExample(Number(select.value)));
  for (const id of ["graph-nodes", "graph-colors", "graph-edges", "graph-fixed"]) {
    $(id).addEventListener("input", drawGraphPreview);
  }
  loadGraphExample(0);
}

function loadGraphExample(i) {
  const ex = GRAPH_EXAMPLES[i];
  $("graph-nodes").value = ex.nodes;
  $("graph-colors").value = ex.colors;
  $("graph-edges").value = ex.edges.split(" ").join("\n");
  $("graph-fixed").value = ex.fixed;
  drawGraphPreview();
}

// Edges as "0-1 1-2", "0 1\n1 2", "0,1; 1,2" or JSON [[0,1],[1,2]]; returns [[u, v], ...].
function parseEdges(text) {
  const trimmed = text.trim();
  if (!trimmed) return [];
  if (trimmed.startsWith("[")) {
    const value = JSON.parse(trimmed);
    if (!Array.isArray(value)) throw new Error("edges JSON must be a list of [u, v] pairs");
    return value;
  }
  const numbers = (trimmed.match(/-?\d+/g) || []).map(Number);
  if (/\d\s*-\s*\d/.test(trimmed)) {  // "0-1" pairs
    return [...trimmed.matchAll(/(\d+)\s*-\s*(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  }
  if (numbers.length % 2) throw new Error("edges: an odd count of node numbers");
  const pairs = [];
  for (let i = 0; i < numbers.length; i += 2) pairs.push([numbers[i], numbers[i + 1]]);
  return pairs;
}

function parseFixed(text) {
  const fixed = {};
  for (const m of text.matchAll(/(\d+)\s*[:=]\s*(\d+)/g)) fixed[m[1]] = Number(m[2]);
  return fixed;
}

function graphInput() {
  return {
    num_nodes: Number($("graph-nodes").value),
    num_colors: Number($("graph-colors").value),
    edges: parseEdges($("graph-edges").value),
    fixed: parseFixed($("graph-fixed").value),
  };
}

function drawGraphPreview() {
  const note = $("graph-parse");
  const box = $("graph-preview");
  try {
    const graph = graphInput();
    note.textContent = `${graph.num_nodes} nodes, ${graph.edges.length} edges, ${graph.num_colors} colours`;
    const colors = Array.from({ length: graph.num_nodes }, (_, i) => (i in graph.fixed ? graph.fixed[i] : null));
    box.replaceChildren(graphSvg(graph.num_nodes, graph.edges, colors, "The graph to colour", graph.fixed));
    drawLegend(graph.num_colors);
  } catch (err) {
    note.textContent = `cannot read the edges: ${err.message}`;
    box.replaceChildren();
  }
  updateRequestPreview();
}

function drawLegend(k) {
  const legend = $("graph-legend");
  legend.replaceChildren("Colours:");
  for (let c = 0; c < Math.min(k, PALETTE.length); c++) {
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.background = PALETTE[c];
    legend.append(swatch, `${c} ${PALETTE_NAMES[c]}`);
  }
  legend.append(". A thick ring marks a fixed colour.");
}

// The graph on a circle; colors[i] is node i's colour index or null (uncoloured).
function graphSvg(n, edges, colors, title, fixed = {}) {
  const size = 240, mid = size / 2, radius = n > 1 ? mid - 26 : 0;
  const at = (i) => {
    const angle = (2 * Math.PI * i) / Math.max(n, 1) - Math.PI / 2;
    return [mid + radius * Math.cos(angle), mid + radius * Math.sin(angle)];
  };
  // The view box fits the nodes (a circle's points do not reach its bottom for odd n).
  const points = Array.from({ length: n }, (_, i) => at(i));
  const ys = points.map(([, y]) => y).concat([mid]);
  const top = Math.min(...ys) - 20, height = Math.max(...ys) - top + 20;
  const root = svg("svg", { viewBox: `0 ${top} ${size} ${height}`, role: "img", class: "graph" });
  const label = svg("title");
  label.textContent = title;
  root.append(label);
  for (const [u, v] of edges) {
    if (!(u >= 0 && u < n && v >= 0 && v < n)) continue;  // the API names the bad edge
    const [x1, y1] = at(u), [x2, y2] = at(v);
    root.append(svg("line", { x1, y1, x2, y2, class: "edge" }));
  }
  for (let i = 0; i < n; i++) {
    const [cx, cy] = at(i);
    const colour = colors[i];
    const group = svg("g", { class: "node", "data-node": String(i), "data-color": colour ?? "" });
    group.append(svg("circle", {
      cx, cy, r: 15, fill: colour == null ? "#fff" : PALETTE[colour] || "#999",
      class: i in fixed ? "fixed" : "",
    }));
    const text = svg("text", { x: cx, y: cy + 5, "text-anchor": "middle" });
    text.textContent = String(i);
    group.append(text);
    root.append(group);
  }
  return root;
}

// ---- request bodies -----------------------------------------------------------------------------------
function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

// The body as an object, and the seed as a digit string (kept out of JS numbers: it may pass 2^53).
function requestBody() {
  const common = {};
  const temperature = numberOrNull("opt-temperature");
  const timeout = numberOrNull("opt-timeout");
  if (temperature !== null) common.temperature = temperature;
  if (timeout !== null) common.timeout_ms = timeout;
  let body;
  if (state.task === "mnist") {
    body = { n: Number($("mnist-n").value), format: "png", ...common };
  } else {
    common.num_trajectories = Number($("opt-width").value);
    common.max_solutions = Number($("opt-max-solutions").value);
    if (state.task === "sudoku") {
      body = { task: "sudoku", puzzle: sudokuString(), ...common };
    } else if (state.task === "nqueens") {
      const placed = [...queens.entries()].sort((a, b) => a[0] - b[0]);
      body = { task: "nqueens", n: boardSize(), queens: placed, ...common };
    } else {
      const graph = graphInput();
      body = { task: "graph_coloring", ...graph, ...common };
      if (!Object.keys(graph.fixed).length) delete body.fixed;
    }
  }
  body.stream = true;  // Server-Sent Events: solutions drawn as they are verified (postStream)
  return body;
}

// JSON text of the body with the seed spliced in as digits (or null).
function requestJson(body) {
  const seed = $("opt-seed").value.trim();
  const json = JSON.stringify(body);
  if (seed === "") return json.slice(0, -1) + ',"seed":null}';
  if (!/^\d+$/.test(seed)) throw new Error(`seed must be a whole number ≥ 0 or empty, got "${seed}"`);
  return json.slice(0, -1) + `,"seed":${seed.replace(/^0+(?=\d)/, "")}}`;
}

function updateRequestPreview() {
  const pre = $("request-body");
  if (!pre) return;
  const path = state.task === "mnist" ? "POST /sample" : "POST /solve";
  try {
    pre.textContent = `${path}\n${requestJson(requestBody())}`;
  } catch (err) {
    pre.textContent = `${path}\n(${err.message})`;
  }
}

// ---- status panel and errors --------------------------------------------------------------------------
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// The API's message: {"detail": "text"} or {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}.
function apiMessage(status, body, text) {
  const detail = body && body.detail;
  let message;
  if (typeof detail === "string") message = detail;
  else if (Array.isArray(detail)) {
    message = detail.map((d) => {
      const loc = (d.loc || []).filter((part) => part !== "body").join(".");
      return loc ? `${loc}: ${d.msg}` : d.msg;
    }).join("\n");
  } else message = text || "(empty response)";
  return `${status} ${STATUS_TEXT[status] || ""}: ${message}`.replace("  ", " ");
}
const STATUS_TEXT = {
  413: "Payload Too Large", 422: "Unprocessable Content", 429: "Too Many Requests",
  499: "Client Closed Request", 500: "Internal Server Error", 503: "Service Unavailable",
};

function setStatus(fields) {
  const list = $("status");
  list.replaceChildren();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    list.append(el("div", { class: "field", "data-field": name },
      el("dt", { text: name }), el("dd", { text: String(value) })));
  }
}

function clearResults() {
  hideError();
  $("announce").textContent = "";
  $("status").replaceChildren();
  $("solutions").replaceChildren();
}

// ---- drawing one solution -----------------------------------------------------------------------------
function solutionCard(index, solution) {
  const card = el("figure", { class: "solution", "data-index": String(index) });
  const caption = el("figcaption", {});
  caption.append(el("strong", { text: `#${index + 1}` }));
  const facts = [];
  if (solution.count !== undefined) facts.push(`${solution.count} trajector${solution.count === 1 ? "y" : "ies"}`);
  if (solution.first_step !== undefined) facts.push(`first at step ${solution.first_step}`);
  if (solution.score !== undefined) facts.push(`score ${solution.score.toFixed(3)}`);
  caption.append(` ${facts.join(" · ")}`);
  return [card, caption];
}

// Draws one solution of the current request: called once per solution, as they arrive.
function renderSolution(task, request, solution, index) {
  const target = $("solutions");
  const [card, caption] = solutionCard(index, solution);
  if (task === "sudoku") card.append(sudokuBoard(request.puzzle, solution.solution));
  else if (task === "nqueens") card.append(queensBoard(request.n, request.queens, solution.solution.queens));
  else if (task === "graph_coloring") {
    const colors = solution.solution.colors;
    const names = colors.map((c, i) => `node ${i}: ${PALETTE_NAMES[c] || c}`).join(", ");
    card.append(graphSvg(request.num_nodes, request.edges, colors, `Colouring ${index + 1}: ${names}`,
                         request.fixed || {}));
    card.append(el("p", { class: "mono small", text: `colors ${JSON.stringify(colors)}` }));
  } else if (task === "mnist") {
    card.className = "digit";
    card.replaceChildren(el("img", {
      src: `data:image/png;base64,${solution.solution}`, alt: `sampled digit ${index + 1}`,
      width: "56", height: "56",
    }));
    target.classList.add("digits");
    target.append(card);
    return;
  }
  target.classList.remove("digits");
  card.append(caption);
  target.append(card);
}

function sudokuBoard(puzzle, answer) {
  const board = el("div", { class: "sudoku result", role: "table", "aria-label": "Sudoku solution" });
  const digits = Array.isArray(answer) ? answer.flat().join("") : String(answer);
  for (let i = 0; i < 81; i++) {
    const given = /[1-9]/.test(puzzle[i]);
    board.append(el("span", {
      class: `cell ${given ? "given" : "filled"}`, role: "cell", text: digits[i],
      "aria-label": `row ${Math.floor(i / 9) + 1} column ${(i % 9) + 1}: ${digits[i]}${given ? " (given)" : ""}`,
    }));
  }
  return board;
}

function queensBoard(n, given, placed) {
  const board = el("div", { class: "chess result", role: "table", "aria-label": `${n} x ${n} board` });
  board.style.setProperty("--n", n);
  const givenAt = new Set(given.map(([r, c]) => `${r},${c}`));
  const queenAt = new Set(placed.map(([r, c]) => `${r},${c}`));
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      const key = `${r},${c}`;
      const queen = queenAt.has(key);
      const kind = queen ? (givenAt.has(key) ? " queen given" : " queen placed") : "";
      const square = el("span", {
        class: `sq ${(r + c) % 2 ? "dark" : "light"}${kind}`, role: "cell",
        "data-row": String(r), "data-col": String(c),
      });
      if (queen) {
        square.textContent = "♛";
        square.setAttribute("aria-label", `queen at row ${r + 1} column ${c + 1}`);
      }
      board.append(square);
    }
  }
  return board;
}

// ---- one request ----------------------------------------------------------------------------------------
class Run {
  constructor(task, request) {
    this.task = task;
    this.request = request;
    this.found = 0;
    this.started = performance.now();
    this.controller = new AbortController();
    this.timer = setInterval(() => this.tick(), 100);
    this.fields = { state: "running" };
    this.tick();
  }

  // performance.now() based: the page's own clock, from the click to the last byte.
  elapsed() {
    return `${((performance.now() - this.started) / 1000).toFixed(2)} s`;
  }

  tick() {
    setStatus({ ...this.fields, elapsed: this.elapsed(), [this.countName()]: this.found });
  }

  countName() {
    return this.task === "mnist" ? "images" : "solutions found";
  }

  solution(solution, index) {
    this.found += 1;
    renderSolution(this.task, this.request, solution, index);
  }

  progress(fields) {
    Object.assign(this.fields, fields);
    this.tick();
  }

  // The answer replaces what streamed in: its counts are final, and a seeded answer is made of a prefix
  // of the trajectories, so it may leave out a solution a later trajectory streamed.
  answer(items) {
    $("solutions").replaceChildren();
    this.found = 0;
    items.forEach((item, i) => this.solution(item, i));
  }

  done(response, rawSeed) {
    this.finish();
    const { solutions, images, grid_png, ...fields } = response;
    if (rawSeed !== undefined) fields.seed = rawSeed;
    const { state: _, ...live } = this.fields;  // the last progress: trajectories alive, retired
    setStatus({ state: "done", elapsed: this.elapsed(), [this.countName()]: this.found, ...live, ...fields });
    // The status panel changes ten times a second; screen readers hear only the outcome.
    $("announce").textContent = `Done in ${this.elapsed()}: ${this.found} ${this.countName().split(" ")[0]}.`;
    if (this.found === 0 && this.task !== "mnist") {
      $("solutions").append(el("p", { class: "muted empty", text:
        "No verified solution in this budget: try more width, another seed or a higher temperature." }));
    }
  }

  fail(message) {
    this.finish();
    showError(message);
    setStatus({ state: "error", elapsed: this.elapsed() });
  }

  finish() {
    clearInterval(this.timer);
    // One column (phones): the results are below the form; bring them into view.
    if (window.matchMedia("(max-width: 820px)").matches) $("results").scrollIntoView({ block: "start" });
    $("run").disabled = false;
    $("cancel").disabled = true;
    if (state.run === this) state.run = null;
  }
}

function retiredText(retired) {
  const parts = Object.entries(retired || {}).sort().map(([reason, n]) => `${reason} ${n}`);
  return parts.length ? parts.join(", ") : "none yet";
}

// One Server-Sent Event from its lines ("event: kind", "data: json"; ":" lines are pings).
function parseEvent(block) {
  let kind = "message";
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { kind, data: data.join("\n") } : null;
}

function handleEvent(path, event, run) {
  if (event.kind === "done") {
    const body = JSON.parse(event.data);
    // JSON numbers past 2^53 lose digits in JSON.parse: read the seed from the text itself.
    const seedMatch = event.data.match(/"seed"\s*:\s*(\d+)/);
    const rawSeed = seedMatch && BigInt(seedMatch[1]) > SAFE ? seedMatch[1] : undefined;
    run.answer(path === "sample" ? body.images.map((image) => ({ solution: image })) : body.solutions);
    run.done(body, rawSeed);
    return true;
  }
  const data = JSON.parse(event.data);
  if (event.kind === "error") {
    run.fail(apiMessage(data.status, data, ""));
    return true;
  }
  if (event.kind === "solution") run.solution(data, run.found);
  else if (event.kind === "sample") run.solution({ solution: data.image }, run.found);
  else if (event.kind === "progress") {
    run.progress({ steps: data.steps, "trajectories alive": data.alive, waiting: data.waiting,
                   retired: retiredText(data.retired) });
  }
  return false;
}

// The streamed transport: one POST with "stream": true; its events are drawn as they arrive.
async function postStream(path, json, run) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST", headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: json, signal: run.controller.signal,
    });
  } catch (err) {
    run.fail(err.name === "AbortError" ? "Cancelled." : `The request did not reach the service: ${err.message}`);
    return;
  }
  if (!response.ok) {  // refused before it was queued (422, 429, 503): the API's JSON error
    const text = await response.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* not JSON: shown as text */ }
    let message = apiMessage(response.status, body, text);
    const retry = response.headers.get("retry-after");
    if (response.status === 429 && retry) message += ` (retry after ${retry} s)`;
    run.fail(message);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const blocks = buffer.split(/\r\n\r\n|\n\n|\r\r/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const event = parseEvent(block);
        if (event && handleEvent(path, event, run)) return;
      }
    }
  } catch (err) {
    run.fail(err.name === "AbortError" ? "Cancelled." : `The stream broke off: ${err.message}`);
    return;
  }
  run.fail("The stream ended without an answer.");
}

function submit(event) {
  event.preventDefault();
  if (state.run) return;
  clearResults();
  let body, json;
  try {
    body = requestBody();
    json = requestJson(body);
  } catch (err) {
    showError(err.message);
    return;
  }
  updateRequestPreview();
  const run = new Run(state.task, body);
  state.run = run;
  $("run").disabled = true;
  $("cancel").disabled = false;
  postStream(state.task === "mnist" ? "sample" : "solve", json, run);
}

function cancel() {
  if (state.run) state.run.controller.abort();  // the service aborts the job when the client goes away
}

// ---- start ----------------------------------------------------------------------------------------------
function start() {
  setUpTabs();
  buildSudokuEditor();
  buildQueensEditor();
  buildGraphEditor();
  $("request-form").addEventListener("submit", submit);
  $("request-form").addEventListener("input", updateRequestPreview);
  $("cancel").addEventListener("click", cancel);
  $("sudoku-example").value = "2";
  setSudoku(SUDOKU_EXAMPLES[2].puzzle);
  const wanted = location.hash.slice(1);
  selectTask(TASKS.includes(wanted) ? wanted : "sudoku");
  checkService();
}

document.addEventListener("DOMContentLoaded", start);
