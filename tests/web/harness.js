// Runs an exported page's model (rnnlm.js) in Node.js for tests/test_web.py: reads a
// request as JSON on stdin, prints the answers as JSON.
//   {"folder": ..., "prompts": [...], "numTokens": n}   -> per prompt: ids, probabilities, greedy ids and text
//   {"folder": ..., "tokenize": {settings}, "texts": [...]} -> per text: tokens, text(tokens), continuation pieces
"use strict";
const fs = require("fs");
const path = require("path");

const request = JSON.parse(fs.readFileSync(0, "utf8"));
const { RNNLM } = require(path.resolve(request.folder, "rnnlm.js"));

if (request.tokenize) {
  const tokenizer = new RNNLM.Tokenizer(request.tokenize);
  const answers = request.texts.map((text) => {
    const tokens = tokenizer.tokens(text);
    let appended = "";
    for (const token of tokens) appended += tokenizer.continuation(appended, token);
    return { tokens, text: tokenizer.text(tokens), appended };
  });
  process.stdout.write(JSON.stringify(answers));
} else {
  const manifest = JSON.parse(fs.readFileSync(path.join(request.folder, "model.json"), "utf8"));
  const bytes = fs.readFileSync(path.join(request.folder, "weights.bin"));
  const model = new RNNLM.Model(manifest, bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const answers = request.prompts.map((prompt) => {
    const greedy = Array.from(model.tokens(prompt, { numTokens: request.numTokens, temperature: 0 }));
    return {
      ids: model.idsFromText(prompt),
      probabilities: Array.from(model.probabilities(model.start(model.idsFromText(prompt)))),
      greedy,
      text: model.text(prompt, greedy),
      nextWords: model.nextWords(prompt, 3),
    };
  });
  process.stdout.write(JSON.stringify(answers));
}
