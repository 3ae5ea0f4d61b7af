"""The server driven by the official `openai` and `ollama` Python clients.

Run by tests/integration/serve.rs with the interpreter of .venv-clients/ (made by
scripts/setup-clients.sh) and one argument: a JSON file with the server's URL, its API
key, and the expected outputs, which the Rust test computed with `runanywhere run
--json` (a different front end over the same runtime). Exits non-zero, with the
failing check, on the first mismatch.
"""

import json
import random
import sys
import threading
import time
import urllib.request

import ollama
import openai


def check(condition, what, *details):
    if not condition:
        raise AssertionError(what + "".join(f"\n  {d!r}" for d in details))
    print(f"ok: {what}", flush=True)


def metrics(url, key):
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def main():
    spec = json.load(open(sys.argv[1]))
    url, key, model = spec["url"], spec["api_key"], spec["model"]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

    # Models.
    ids = [m.id for m in client.models.list()]
    check(model in ids, "/v1/models lists the served model", ids)

    # Chat completion, non-stream and stream, greedy: the text `run --json` gives for the
    # rendered prompt; usage counts match.
    chat = spec["chat"]
    reply = client.chat.completions.create(
        model=model, messages=chat["messages"], max_tokens=chat["max_tokens"], temperature=0
    )
    check(reply.choices[0].message.content == chat["text"], "chat completion text = run --json",
          reply.choices[0].message.content, chat["text"])
    check(reply.usage.prompt_tokens == chat["prompt_tokens"]
          and reply.usage.completion_tokens == chat["completion_tokens"]
          and reply.usage.total_tokens == chat["prompt_tokens"] + chat["completion_tokens"],
          "chat completion usage", reply.usage, chat)
    check(reply.choices[0].finish_reason == chat["finish_reason"], "chat finish_reason",
          reply.choices[0].finish_reason)
    stream = client.chat.completions.create(
        model=model, messages=chat["messages"], max_tokens=chat["max_tokens"], temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    check("".join(pieces) == chat["text"], "streamed chat text = run --json", "".join(pieces))
    check(usage is not None and usage.completion_tokens == chat["completion_tokens"]
          and usage.prompt_tokens == chat["prompt_tokens"], "stream_options.include_usage", usage)
    check(finish == chat["finish_reason"], "streamed finish_reason", finish)

    # The same model on another engine, side by side: identical greedy output.
    other = client.chat.completions.create(
        model=spec["other_engine_model"], messages=chat["messages"],
        max_tokens=chat["max_tokens"], temperature=0,
    )
    check(other.choices[0].message.content == chat["text"], "the same chat on a second engine",
          other.choices[0].message.content, other.system_fingerprint)

    # Completions with a token-array prompt.
    comp = spec["completion_ids"]
    done = client.completions.create(model=model, prompt=comp["prompt"],
                                     max_tokens=comp["max_tokens"], temperature=0)
    check(done.choices[0].text == comp["text"], "completion of a token-array prompt = run --json",
          done.choices[0].text, comp["text"])
    check(done.usage.prompt_tokens == len(comp["prompt"])
          and done.usage.completion_tokens == comp["max_tokens"], "completion usage", done.usage)
    echoed = client.completions.create(model=model, prompt=spec["raw"]["prompt"], echo=True,
                                       max_tokens=spec["raw"]["max_tokens"], temperature=0)
    check(echoed.choices[0].text == spec["raw"]["prompt"] + spec["raw"]["text"], "completion echo",
          echoed.choices[0].text)

    # What the server cannot do is a clear error naming the field.
    # Log-probabilities: greedy tokens are their own best alternative, and the tokens
    # spell the text.
    scored = client.chat.completions.create(model=model, messages=chat["messages"], max_tokens=chat["max_tokens"],
                                            temperature=0, logprobs=True, top_logprobs=2)
    content = scored.choices[0].logprobs.content
    check(scored.choices[0].message.content == chat["text"] and len(content) == chat["completion_tokens"],
          "chat logprobs: one per token", len(content))
    check(all(t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == t.logprob
              and len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content), "greedy tokens are the top alternative")
    spelled = b"".join(bytes(t.bytes) for t in content).decode("utf-8", "replace")
    check(chat["text"] in spelled, "the tokens' bytes spell the reply", spelled)
    streamed = []
    for chunk in client.chat.completions.create(model=model, messages=chat["messages"], max_tokens=chat["max_tokens"],
                                                temperature=0, logprobs=True, top_logprobs=1, stream=True):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                streamed.extend(choice.logprobs.content)
    # The same tokens; the scores agree to float rounding (llama.cpp's prompt cache reuses
    # the earlier run's keys and values, computed in another batch).
    check([t.token for t in streamed] == [t.token for t in content]
          and all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(streamed, content)),
          "streamed chat logprobs", len(streamed))
    legacy = client.completions.create(model=model, prompt=comp["prompt"], max_tokens=5, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    check(len(lp.tokens) == 5 and len(lp.top_logprobs[0]) <= 2 and lp.text_offset[0] == 0, "completions logprobs", lp)

    for kwargs, param in [({"n": 2}, "n"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                          ({"presence_penalty": 0.5}, "presence_penalty")]:
        try:
            client.chat.completions.create(model=model, messages=chat["messages"], max_tokens=4, **kwargs)
            check(False, f"{param} refused")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and e.body.get("param") == param, f"{param} refused with 400", e.body)
    try:
        client.chat.completions.create(model="no-such-model", messages=chat["messages"])
        check(False, "unknown model refused")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "no-such-model" in e.message, "unknown model: 404", e.message)
    # Embeddings (the client asks for base64 by default) = `runanywhere embed --json`.
    emb = spec["embeddings"]
    got = client.embeddings.create(model=model, input=emb["texts"])
    vectors = [d.embedding for d in got.data]
    check(len(vectors) == len(emb["vectors"]) and all(
        len(v) == len(w) and max(abs(a - b) for a, b in zip(v, w)) < 1e-6 for v, w in zip(vectors, emb["vectors"])),
        "embeddings = runanywhere embed", [len(v) for v in vectors])
    floats = client.embeddings.create(model=model, input=emb["texts"][0], encoding_format="float", dimensions=8)
    short = floats.data[0].embedding
    check(len(short) == 8 and abs(sum(x * x for x in short) - 1) < 1e-5, "dimensions truncates and renormalizes", short)
    try:
        client.embeddings.create(model=spec["other_engine_model"], input="hello")
        check(False, "embeddings on an engine without them")
    except openai.BadRequestError as e:
        check("does not compute embeddings" in e.message, "embeddings on candle: 400 naming why", e.message)
    try:
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "a wrong API key refused")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "a wrong API key: 401", e.message)

    # Ollama's client.
    o = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}"})
    names = [m.model for m in o.list().models]
    check(model in names, "ollama list", names)
    raw = spec["raw"]
    g = o.generate(model=model, prompt=raw["prompt"], raw=True,
                   options={"temperature": 0, "num_predict": raw["max_tokens"]})
    check(g.response == raw["text"] and g.done and g.eval_count == raw["max_tokens"],
          "ollama generate (raw) = run --json", g.response, raw["text"])
    streamed = "".join(part.response for part in o.generate(
        model=model, prompt=raw["prompt"], raw=True, stream=True,
        options={"temperature": 0, "num_predict": raw["max_tokens"]}))
    check(streamed == raw["text"], "ollama generate, streamed", streamed)
    c = o.chat(model=model, messages=chat["messages"],
               options={"temperature": 0, "num_predict": chat["max_tokens"]})
    check(c.message.content == chat["text"] and c.message.role == "assistant",
          "ollama chat = run --json", c.message.content)
    e = o.embed(model=model, input=emb["texts"])
    check(all(max(abs(a - b) for a, b in zip(v, w)) < 1e-6 for v, w in zip(e.embeddings, emb["vectors"])),
          "ollama embed = runanywhere embed")
    running = [m.model for m in o.ps().models]
    check(model in running, "ollama ps lists the loaded model", running)
    shown = o.show(model)
    check(shown.modelinfo["general.architecture"] == "llama", "ollama show", shown.modelinfo)
    try:
        o.chat(model=model, messages=chat["messages"], options={"mirostat": 1})
        check(False, "unknown ollama option refused")
    except ollama.ResponseError as e:
        check(e.status_code == 400 and "mirostat" in e.error, "unknown ollama option: 400", e.error)

    # Pull from the (loopback) Hub, generate with what came, delete it.
    pull = spec["pull"]
    statuses = [p.status for p in o.pull(pull["reference"], stream=True)]
    check(statuses[-1] == "success" and any("pulling" in s for s in statuses), "ollama pull progress", statuses)
    names = [m.model for m in o.list().models]
    check(pull["id"] in names, "the pulled model is listed", names)
    g = o.generate(model=pull["id"], prompt=raw["prompt"], raw=True,
                   options={"temperature": 0, "num_predict": raw["max_tokens"]})
    check(g.response == raw["text"], "generation from the pulled model", g.response)
    o.delete(pull["id"])
    check(pull["id"] not in [m.model for m in o.list().models], "ollama delete")

    # Many streaming clients at once; a third leave midway.
    conc = spec["concurrency"]
    rng = random.Random(7)
    results, errors = {}, []

    def one(i):
        prompt, expected = conc["prompts"][i % len(conc["prompts"])], conc["texts"][i % len(conc["texts"])]
        leave_after = rng.randint(1, 10) if i % 3 == 0 else None
        try:
            s = client.completions.create(model=model, prompt=prompt, max_tokens=conc["max_tokens"],
                                          temperature=0, stream=True)
            text = []
            for n, chunk in enumerate(s):
                text.append(chunk.choices[0].text)
                if leave_after is not None and n + 1 >= leave_after:
                    s.close()
                    results[i] = "left"
                    return
            results[i] = ("".join(text), expected)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(conc["clients"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "concurrent clients without errors", errors)
    completed = [r for r in results.values() if r != "left"]
    check(len(results) == conc["clients"] and len(completed) >= conc["clients"] * 2 // 3,
          f"{len(completed)} streams completed, {conc['clients'] - len(completed)} left", len(results))
    bad = [r for r in completed if r[0] != r[1]]
    check(not bad, "every completed stream is exact", bad[:2])
    deadline = time.time() + 10
    while True:
        m = metrics(url, key)
        if m.get("runanywhere_generations_in_flight") == 0 and m.get("runanywhere_queue_depth") == 0:
            break
        check(time.time() < deadline, "the queue drains after the clients are gone", m)
        time.sleep(0.05)
    check(m["runanywhere_models_busy"] == 0, "no slot held afterwards", m)
    print("all client checks passed", flush=True)


if __name__ == "__main__":
    main()
