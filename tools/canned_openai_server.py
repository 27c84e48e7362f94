"""A canned OpenAI-compatible server on 127.0.0.1 for tests and for `make instruct` without a
real model: ``POST /v1/chat/completions`` and ``/v1/completions`` answer the self-instruct
prompts with tasks whose instructions and outputs are real NTREX-128 sentences of the language
the prompt asks for (not model output; said in every response's ``model`` field).

Per generation request it returns 17 tasks, a few of them deliberately bad so every drop reason
of the pipeline is exercised: one without an output (``missing_part``), one in English
(``wrong_language``), one repeating an earlier instruction (``similar_in_round``), and every
third request ends with ``finish_reason = "length"`` and a cut last task. Translation requests
get one task in the target language. ``fail_first=N`` answers the first N requests with HTTP 503
(retry tests).

Usage: ``python tools/canned_openai_server.py --port 8000 --data-root ../shared/data``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NTREX = {"ar": "arb", "de": "deu", "es": "spa", "fr": "fra", "id": "ind", "ja": "jpn", "ko": "kor",
         "pt": "por", "ru": "rus", "th": "tha", "vi": "vie", "zh": "zho-CN", "it": "ita", "nl": "nld",
         "pl": "pol", "tr": "tur", "he": "heb", "en": "eng"}
NAMES = {"Chinese": "zh", "English": "en", "Russian": "ru", "Spanish": "es", "French": "fr",
         "Portuguese": "pt", "German": "de", "Italian": "it", "Dutch": "nl", "Polish": "pl",
         "Arabic": "ar", "Turkish": "tr", "Hebrew": "he", "Japanese": "ja", "Korean": "ko",
         "Thai": "th", "Vietnamese": "vi", "Indonesian": "id"}


class CannedServer:
    """The server in a daemon thread. ``url`` is the ``base_url`` for the openai client;
    ``requests`` counts the requests served. Use as a context manager or call ``close()``."""

    def __init__(self, data_root: str | Path, port: int = 0, fail_first: int = 0):
        self.root = Path(data_root) / "ntrex-128"
        self._lines: dict[str, list[str]] = {}
        self.fail_left = int(fail_first)
        self.requests = 0
        self._lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with srv._lock:
                    srv.requests += 1
                    fail = srv.fail_left > 0
                    srv.fail_left -= int(fail)
                if fail:
                    return self._send(503, {"error": {"message": "overloaded (canned)", "type": "server_error"}})
                if "messages" in body:
                    prompt = body["messages"][-1]["content"]
                else:
                    prompt = body.get("prompt", "")
                try:
                    text, finish = srv.answer(prompt)
                except Exception as e:  # a bug here must show up as a 400, not a dropped connection
                    return self._send(400, {"error": {"message": f"canned server: {type(e).__name__}: {e}",
                                                      "type": "invalid_request_error"}})
                choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                           "finish_reason": finish} if "messages" in body else
                          {"index": 0, "text": text, "finish_reason": finish, "logprobs": None})
                self._send(200, {"id": "canned-" + hashlib.md5(prompt.encode()).hexdigest()[:12],
                                 "object": "chat.completion" if "messages" in body else "text_completion",
                                 "created": 0, "model": "canned-ntrex-sentences",
                                 "choices": [choice],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

            def _send(self, code, obj):
                data = json.dumps(obj, ensure_ascii=False).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def lines(self, lang: str) -> list[str]:
        """NTREX sentences of ``lang``."""
        if lang not in self._lines:
            name = "newstest2019-src.eng.txt" if lang == "en" else f"newstest2019-ref.{NTREX[lang]}.txt"
            self._lines[lang] = [x for x in (self.root / name).read_text(encoding="utf-8").splitlines()
                                 if len(x) > 40]
        return self._lines[lang]

    def answer(self, prompt: str) -> tuple[str, str]:
        """(completion text, finish_reason) for a prompt of filters.selfinstruct."""
        h = int(hashlib.md5(prompt.encode()).hexdigest(), 16)
        m = re.search(r"from English into (\w+)", prompt)
        if m:
            lines = self.lines(NAMES[m.group(1)])
            i = h % (len(lines) - 2)
            return (f"###\n1. Instruction: {lines[i]}\n1. Input:\n<noinput>\n1. Output:\n{lines[i + 1]}\n###", "stop")
        m = re.search(r"diverse task instructions in (\w+)", prompt)
        lang = NAMES.get(m.group(1), "en") if m else "en"
        first = int(re.findall(r"(\d+)\. Instruction:\s*$", prompt)[-1])
        lines, en = self.lines(lang), self.lines("en")
        blocks, first_inst = [], None
        for j in range(17):
            k = first + j
            i = (h + 7 * j) % (len(lines) - 2)
            inst, out = lines[i], lines[i + 1]
            if j == 0:
                first_inst = inst
            if j == 5:
                blocks.append(f"{k}. Instruction: {inst}\n{k}. Input:\n<noinput>\n")  # no output
                continue
            if j == 9:
                inst, out = en[i % (len(en) - 2)], en[i % (len(en) - 2) + 1]  # wrong language
            if j == 12:
                inst = first_inst  # repeats an instruction of this response
            blocks.append(f"{k}. Instruction: {inst}\n{k}. Input:\n<noinput>\n{k}. Output:\n{out}\n")
        cut = h % 3 == 0
        if cut:
            blocks[-1] = blocks[-1][: len(blocks[-1]) // 2]
        text = "###\n".join(blocks)
        return (" " + text.split("Instruction:", 1)[1], "length" if cut else "stop")

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--data-root", default="../shared/data")
    a = ap.parse_args()
    s = CannedServer(a.data_root, a.port)
    print(f"canned OpenAI-compatible server at {s.url}", flush=True)
    try:
        s.thread.join()
    except KeyboardInterrupt:
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
