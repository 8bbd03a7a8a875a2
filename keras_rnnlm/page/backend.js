// The page's backend when keras_rnnlm.serve serves it: the model runs in that process,
// behind its JSON API (keras_rnnlm/serve.py); this turns the page's calls into requests.
"use strict";

window.rnnlmBackend = async function () {
  async function post(path, body, signal) {
    const response = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
      throw new Error(answer.error);
    }
    return response;
  }

  const listed = await (await fetch("api/runs")).json();
  let current = listed.runs.find((run) => run.name === listed.default) || listed.runs[0];
  let tokenizer = new RNNLM.Tokenizer(current.tokenizer);
  return {
    get tokenizer() { return tokenizer; },
    // Each run for the page's list: its name, and its corpus, size, validation perplexity and date.
    runs: () => listed.runs.map((run) => ({
      name: run.name,
      label: `${run.name}: ${run.corpus}, ${run.model_megabytes} MB` +
        `${run.val_perplexity ? `, perplexity ${run.val_perplexity.toFixed(1)}` : ""}, ${run.saved.slice(0, 10)}`,
    })),
    current: () => current.name,
    switchTo(name) {
      current = listed.runs.find((run) => run.name === name);
      tokenizer = new RNNLM.Tokenizer(current.tokenizer);
    },
    describe() {
      const perplexity = current.val_perplexity ? `validation perplexity ${current.val_perplexity.toFixed(2)}, ` : "";
      return `${current.corpus}, ${current.level} level; ${current.model_megabytes} MB, ${perplexity}saved ${current.saved}`;
    },
    async nextWords(text, k) {
      return (await (await post("api/next_words", { text, k, run: current.name })).json()).words;
    },
    // The settings as typed: the server checks them as the command line does (a 400 names the one out of range).
    async generate(text, settings, onToken, stopped) {
      const controller = new AbortController();
      const response = await post("api/generate", {
        text, run: current.name, strategy: settings.strategy, num_tokens: settings.numTokens, temperature: settings.temperature,
        top_k: settings.strategy === "top_k" ? settings.topK : null, top_p: settings.strategy === "top_p" ? settings.topP : null,
        samples: settings.samples, seed: settings.seed,
      }, controller.signal);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const texts = new Array(settings.samples).fill(text);
      let pending = "";
      for (;;) {
        if (stopped()) {  // the server stops at its next token
          controller.abort();
          return;
        }
        const { value, done } = await reader.read();
        if (done) return;
        const lines = (pending + value).split("\n");
        pending = lines.pop();
        for (const line of lines) {
          const item = JSON.parse(line);
          if (item.done) continue;
          const piece = tokenizer.continuation(texts[item.sample], item.token);
          texts[item.sample] += piece;
          onToken(item.sample, piece);
        }
      }
    },
  };
};
