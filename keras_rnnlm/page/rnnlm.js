// keras_rnnlm's model in the browser: the exported weights, the tokenizer and the
// sampling loop, in plain JavaScript over typed arrays (no library, no build step).
//
// It computes what the Keras model computes: Embedding, then each recurrent layer (LSTM,
// GRU or SimpleRNN, Keras' gate order and activations) with its layer normalization, then
// the output Dense and a softmax. A windows-mode model reads the last window_size tokens
// from a zero state, as Keras does; a bptt-mode model carries its state token to token,
// starting from a line break. keras_rnnlm's tests check it against Keras
// (tests/test_web.py): the same next-token probabilities within 1e-4, the same greedy text.
//
// Loaded by the page (index.html) as a script, and by Node.js (require) in the tests.
"use strict";

(function (exported) {
  const PAD = 0;
  const UNK = 1;
  const EOL = 2;
  const LINE_BREAK = "<eol>";
  const BANNED = [PAD, UNK];
  const MAX_TOKENS = 100000;
  const NO_SPACE_BEFORE = new Set(Array.from(".,;:!?)]}%…"));
  const NO_SPACE_AFTER = new Set(Array.from("([{"));
  // As keras_rnnlm.tokenizer: Python's \w is a letter, a number or the underscore.
  const WORDS = {
    punctuation: () => /[\p{L}\p{N}_]+(?:['’][\p{L}\p{N}_]+)*|<unk>|[^\p{L}\p{N}_\s]|\n/gu,
    whitespace: () => /[^\s]+|\n/gu,
  };

  class Tokenizer {
    constructor({ level, split, lowercase }) {
      this.level = level;
      this.split = split;
      this.lowercase = lowercase;
    }

    tokens(text) {
      if (this.lowercase) text = text.toLowerCase();
      let tokens;
      if (this.level === "char") {
        tokens = Array.from(text.replace(/\r+(?=\n|$)/g, ""));
      } else {
        tokens = Array.from(text.matchAll(WORDS[this.split]()), (match) => match[0]);
      }
      return tokens.map((token) => (token === "\n" ? LINE_BREAK : token));
    }

    text(tokens) {
      if (this.level === "char") return tokens.map((token) => (token === LINE_BREAK ? "\n" : token)).join("");
      const pieces = [];
      for (const token of tokens) {
        if (token === LINE_BREAK) {
          pieces.push("\n");
          continue;
        }
        const last = pieces[pieces.length - 1];
        if (pieces.length && !last.endsWith("\n") && !NO_SPACE_BEFORE.has(token) && !NO_SPACE_AFTER.has(last)) {
          pieces.push(" ");
        }
        pieces.push(token);
      }
      return pieces.join("");
    }

    // What to append to a text, as it stands, for one more token: text(tokens) keeps
    // this spacing, so a text and its continuation read as generate prints them.
    continuation(text, token) {
      if (token === LINE_BREAK) return "\n";
      if (this.level === "char") return token;
      const last = Array.from(text).pop();
      const spaced = last !== undefined && !/\s/u.test(last) && !NO_SPACE_BEFORE.has(token) && !NO_SPACE_AFTER.has(last);
      return spaced ? ` ${token}` : token;
    }
  }

  // y[j] += x . rows[j] for each of y's entries: rows is a kernel stored transposed,
  // (out, in) row-major, so each sum runs along contiguous memory in registers (about
  // twice as fast in V8 as adding x[i] * kernel[i][j] into y, which stores at every step).
  function addProducts(x, rows, y) {
    const n = x.length;
    for (let j = 0, row = 0; j < y.length; j++, row += n) {
      let a = 0, b = 0, c = 0, d = 0, i = 0;
      for (; i + 3 < n; i += 4) {
        a += x[i] * rows[row + i];
        b += x[i + 1] * rows[row + i + 1];
        c += x[i + 2] * rows[row + i + 2];
        d += x[i + 3] * rows[row + i + 3];
      }
      for (; i < n; i++) a += x[i] * rows[row + i];
      y[j] += a + b + c + d;
    }
    return y;
  }

  const sigmoid = (v) => 1 / (1 + Math.exp(-v));

  function cellStep(layer, x, state) {
    const u = layer.units;
    if (layer.type === "lstm") {
      const z = new Float64Array(layer.bias);
      addProducts(x, layer.kernel, z);
      addProducts(state.h, layer.recurrent, z);
      const h = new Float64Array(u);
      const c = new Float64Array(u);
      for (let j = 0; j < u; j++) {
        c[j] = sigmoid(z[u + j]) * state.c[j] + sigmoid(z[j]) * Math.tanh(z[2 * u + j]);
        h[j] = sigmoid(z[3 * u + j]) * Math.tanh(c[j]);
      }
      return { h, c };
    }
    if (layer.type === "gru") {  // Keras' reset_after form: the reset gate scales the recurrent part
      const inner = addProducts(x, layer.kernel, new Float64Array(layer.bias.subarray(0, 3 * u)));
      const recurrent = addProducts(state.h, layer.recurrent, new Float64Array(layer.bias.subarray(3 * u)));
      const h = new Float64Array(u);
      for (let j = 0; j < u; j++) {
        const update = sigmoid(inner[j] + recurrent[j]);
        const reset = sigmoid(inner[u + j] + recurrent[u + j]);
        const candidate = Math.tanh(inner[2 * u + j] + reset * recurrent[2 * u + j]);
        h[j] = update * state.h[j] + (1 - update) * candidate;
      }
      return { h };
    }
    const z = addProducts(x, layer.kernel, new Float64Array(layer.bias));  // simple_rnn
    addProducts(state.h, layer.recurrent, z);
    return { h: z.map(Math.tanh) };
  }

  function layerNorm(norm, x) {
    let mean = 0;
    for (const v of x) mean += v;
    mean /= x.length;
    let variance = 0;
    for (const v of x) variance += (v - mean) * (v - mean);
    variance /= x.length;
    const scale = 1 / Math.sqrt(variance + norm.epsilon);
    return x.map((v, j) => (v - mean) * scale * norm.gamma[j] + norm.beta[j]);
  }

  class Model {
    // manifest: model.json; buffer: weights.bin's bytes (float32, little-endian).
    constructor(manifest, buffer) {
      if (manifest.format !== "keras_rnnlm.web/1") throw new Error(`not a keras_rnnlm web export: ${manifest.format}`);
      const floats = new Float32Array(buffer);
      const weight = (name) => {
        const { offset, shape } = manifest.weights[name];
        return floats.subarray(offset, offset + shape.reduce((a, b) => a * b, 1));
      };
      this.manifest = manifest;
      this.tokenizer = new Tokenizer(manifest.tokenizer);
      this.vocabulary = manifest.vocabulary;
      this.ids = new Map(this.vocabulary.map((token, id) => [token, id]));
      this.windowSize = manifest.window_size;  // null: bptt mode
      this.lineMode = manifest.line_mode;
      this.embedding = weight("embedding");
      this.embeddingDim = manifest.weights.embedding.shape[1];
      this.layers = manifest.layers.map((layer) => ({
        type: layer.cell,
        units: layer.units,
        kernel: weight(`${layer.name}/kernel_t`),
        recurrent: weight(`${layer.name}/recurrent_kernel_t`),
        bias: weight(`${layer.name}/bias`),
        norm: layer.layer_norm && {
          epsilon: layer.layer_norm.epsilon,
          gamma: weight(`${layer.layer_norm.name}/gamma`),
          beta: weight(`${layer.layer_norm.name}/beta`),
        },
      }));
      // Kernels are stored transposed, (out, in); a tied output kernel is the embedding matrix.
      this.outputRows = manifest.tied ? this.embedding : weight("next_token/kernel_t");
      this.outputBias = weight("next_token/bias");
    }

    idsFromText(text) {
      return this.tokenizer.tokens(text).map((token) => this.ids.get(token) ?? UNK);
    }

    // The state after reading a prompt's ids: generation and suggestions start here.
    start(ids) {
      if (this.windowSize) {
        const window = new Array(this.windowSize).fill(PAD).concat(ids).slice(-this.windowSize);
        return { window };
      }
      let state = { layers: this.layers.map((layer) => ({ h: new Float64Array(layer.units), c: new Float64Array(layer.units) })) };
      for (const id of [EOL, ...ids]) state = this.advance(state, id);
      return state;
    }

    advance(state, id) {
      if (this.windowSize) return { window: state.window.slice(1).concat([id]) };
      const layers = [];
      let x = this.embedding.subarray(id * this.embeddingDim, (id + 1) * this.embeddingDim);
      this.layers.forEach((layer, number) => {
        const next = cellStep(layer, x, state.layers[number]);
        layers.push(next);
        x = layer.norm ? layerNorm(layer.norm, next.h) : next.h;
      });
      return { layers, features: x };
    }

    // The features the output layer reads: a window read from a zero state (windows
    // mode, every layer over every position as Keras runs it), or the carried state's.
    features(state) {
      if (!this.windowSize) return state.features;
      let sequence = state.window.map((id) => this.embedding.subarray(id * this.embeddingDim, (id + 1) * this.embeddingDim));
      for (const layer of this.layers) {
        let carried = { h: new Float64Array(layer.units), c: new Float64Array(layer.units) };
        sequence = sequence.map((x) => {
          carried = cellStep(layer, x, carried);
          return layer.norm ? layerNorm(layer.norm, carried.h) : carried.h;
        });
      }
      return sequence[sequence.length - 1];
    }

    logits(state) {
      // The output kernel's rows are the embedding matrix's when they are tied.
      return addProducts(this.features(state), this.outputRows, new Float64Array(this.outputBias));
    }

    // The next token's distribution (every id, as the Keras model's softmax gives it).
    probabilities(state) {
      return softmax(this.logits(state));
    }

    // The k likeliest next tokens after a text, <pad> and <unk> left out.
    nextWords(text, k = 8) {
      const probabilities = this.probabilities(this.start(this.idsFromText(text)));
      const ranked = Array.from(probabilities.keys()).filter((id) => !BANNED.includes(id));
      ranked.sort((a, b) => probabilities[b] - probabilities[a]);
      return ranked.slice(0, k).map((id) => ({ word: this.vocabulary[id], probability: probabilities[id] }));
    }

    // Writes up to settings.numTokens tokens after text, one at a time: yields each token's
    // id. settings: {numTokens, temperature (0: greedy), topK (0: all), topP (1: all),
    // seed, maxLines (0: no limit; default 1 for a line-mode model)}.
    *tokens(text, settings) {
      const { numTokens, temperature = 1, topK = 0, topP = 1, seed = 0 } = settings;
      const maxLines = settings.maxLines ?? (this.lineMode ? 1 : 0);
      const random = seededRandom(seed);
      let state = this.start(this.idsFromText(text));
      let lines = 0;
      for (let index = 0; index < numTokens; index++) {
        const logits = this.logits(state);
        for (const id of BANNED) logits[id] = -Infinity;
        const id = choose(logits, temperature, topK, topP, random);
        yield id;
        if (id === EOL && maxLines > 0 && ++lines >= maxLines) return;
        state = this.advance(state, id);
      }
    }

    // The text and its continuation, detokenized (as generate prints it).
    text(prompt, ids) {
      return this.tokenizer.text(this.tokenizer.tokens(prompt).concat(ids.map((id) => this.vocabulary[id])));
    }
  }

  function softmax(logits) {
    let max = -Infinity;
    for (const v of logits) if (v > max) max = v;
    let total = 0;
    const out = new Float64Array(logits.length);
    for (let j = 0; j < logits.length; j++) total += out[j] = Math.exp(logits[j] - max);
    for (let j = 0; j < out.length; j++) out[j] /= total;
    return out;
  }

  function choose(logits, temperature, topK, topP, random) {
    if (temperature === 0) {
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
      return best;
    }
    const probabilities = softmax(logits.map((v) => v / temperature));
    let ranked = Array.from(probabilities.keys()).filter((id) => probabilities[id] > 0);
    ranked.sort((a, b) => probabilities[b] - probabilities[a]);
    if (topK > 0) ranked = ranked.slice(0, topK);
    if (topP < 1) {  // the smallest set of likeliest tokens whose probability reaches p
      let before = 0;
      ranked = ranked.filter((id) => {
        const kept = before < topP;
        before += probabilities[id];
        return kept;
      });
    }
    let total = 0;
    for (const id of ranked) total += probabilities[id];
    let target = random() * total;
    for (const id of ranked) {
      target -= probabilities[id];
      if (target < 0) return id;
    }
    return ranked[ranked.length - 1];
  }

  // mulberry32: a small seeded generator (the same seed, the same text in this page;
  // not the same draws as TensorFlow's, so only greedy text equals the CLI's).
  function seededRandom(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  exported.RNNLM = { Model, Tokenizer, MAX_TOKENS, LINE_BREAK };
})(typeof module !== "undefined" ? module.exports : window);
