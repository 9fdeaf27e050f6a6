#!/usr/bin/env python3
"""A client of atlasbridged's socket protocol, in Python's standard library alone (3.9+).

Copy this file into an agent, or run it to decide one prompt from a shell:

    python3 agent.py --socket "$ATLASBRIDGE_SOCKET" --session build-42 --prompt "Continue? [y/n]"

The exit status is the answer, as for `atlasbridge decide`: 0 auto_reply, 10 require_human,
11 deny, 12 notify_only. Any error is a deny (status 11): an agent without a decision does not
act on its own. `--follow` prints trace entries as they are written instead.

As a library:

    from agent import AtlasBridgeClient, AtlasBridgeError

    with AtlasBridgeClient.connect() as client:
        try:
            answer = client.evaluate("build-42", "p-1", "yes_no", "Continue? [y/n]", "high")
            action = answer["action"]
        except AtlasBridgeError:
            action = "deny"  # no decision: fail closed

The protocol is docs/protocol.md: JSON-RPC 2.0, one message per line, over a Unix socket.
"""

import argparse
import itertools
import json
import os
import socket
import sys
import time
from collections import deque

__all__ = [
    "AtlasBridgeClient",
    "AtlasBridgeError",
    "ConnectionClosed",
    "Subscription",
    "SubscriptionEnded",
    "default_socket_path",
    "main",
]

#: The protocol major this client speaks (`hello`).
PROTOCOL_VERSION = 1
#: The longest line either side may send (1 MiB, without the newline).
MAX_LINE_BYTES = 1024 * 1024
#: How long a call waits for its answer unless told otherwise, in seconds.
DEFAULT_TIMEOUT = 30.0

#: Error codes the protocol says to treat as deny: no active policy, decision not stored.
NO_ACTIVE_POLICY = -32001
STORAGE_FAILURE = -32004
DENY_CODES = frozenset({NO_ACTIVE_POLICY, STORAGE_FAILURE})

#: Exit statuses of `main`, as `atlasbridge decide` has them.
EXIT_STATUS = {"auto_reply": 0, "require_human": 10, "deny": 11, "notify_only": 12}
EXIT_DENY = EXIT_STATUS["deny"]
EXIT_REQUIRE_HUMAN = EXIT_STATUS["require_human"]

SOCKET_ENV = "ATLASBRIDGE_SOCKET"
SOCKET_FILE_NAME = "atlasbridged.sock"


class AtlasBridgeError(Exception):
    """A call got no result.

    `code`, `message` and `data` are the daemon's JSON-RPC error when it sent one; `code` is None
    when the connection itself failed (daemon not running, closed, timed out, bad reply).
    """

    def __init__(self, message, code=None, data=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data

    @classmethod
    def from_error_object(cls, error):
        """The exception for a response's `error` member."""
        if not isinstance(error, dict):
            return cls("malformed error from atlasbridged: {!r}".format(error))
        code = error.get("code")
        return cls(str(error.get("message", "")), code if isinstance(code, int) else None,
                   error.get("data"))

    @property
    def is_deny(self):
        """Whether the protocol says to treat this as deny (-32001, -32004).

        Every other error leaves the agent without a decision too: fail closed on all of them.
        """
        return self.code in DENY_CODES

    def __str__(self):
        if self.code is None:
            return self.message
        return "{} (code {})".format(self.message, self.code)


class ConnectionClosed(AtlasBridgeError):
    """The daemon closed the connection (it stopped, or dropped this client)."""

    def __init__(self):
        super().__init__("atlasbridged closed the connection")


class SubscriptionEnded(AtlasBridgeError):
    """The daemon ended a trace subscription: `reason` is `too_slow` or `shutdown`.

    Subscribe again from `resume_from` (`last_seq + 1`) to continue.
    """

    def __init__(self, reason, last_seq):
        after = "" if last_seq is None else " after seq {}".format(last_seq)
        super().__init__("atlasbridged ended the subscription ({}){}".format(reason, after))
        self.reason = reason
        self.last_seq = last_seq

    @property
    def resume_from(self):
        """The seq to subscribe from to continue, or None when no entry was sent."""
        return None if self.last_seq is None else self.last_seq + 1


def default_socket_path(environ=None, platform=None):
    """The daemon's socket when `--socket` is not given, as docs/configuration.md says.

    `ATLASBRIDGE_SOCKET` (made absolute), else on Linux and other Unix
    `$XDG_RUNTIME_DIR/atlasbridge/atlasbridged.sock`, else
    `${XDG_STATE_HOME:-~/.local/state}/atlasbridge/atlasbridged.sock`; on macOS
    `~/Library/Application Support/dev.atlasbridge.atlasbridge/run/atlasbridged.sock`; on
    Windows the named pipe `\\\\.\\pipe\\atlasbridged-<user>`. Empty variables count as unset,
    and relative XDG directories are ignored.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform

    def var(name):
        return environ.get(name) or None

    def absolute_dir(name):
        value = var(name)
        return value if value and os.path.isabs(value) else None

    chosen = var(SOCKET_ENV)
    if chosen:
        return os.path.abspath(chosen)
    if platform.startswith("win"):
        return r"\\.\pipe\atlasbridged-" + (var("USERNAME") or "default")
    home = var("HOME") or os.path.expanduser("~")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support",
                            "dev.atlasbridge.atlasbridge", "run", SOCKET_FILE_NAME)
    runtime = absolute_dir("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "atlasbridge", SOCKET_FILE_NAME)
    state = absolute_dir("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(state, "atlasbridge", SOCKET_FILE_NAME)


class AtlasBridgeClient:
    """One connection to atlasbridged. One request at a time; not for use by several threads.

    Notifications that arrive while a call waits for its answer are kept for a subscription
    (`subscribe`) and skipped otherwise.
    """

    def __init__(self, sock, path=None, timeout=DEFAULT_TIMEOUT):
        self._sock = sock
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._pending = deque()
        self._subscribed = False
        self.path = path
        self.timeout = timeout
        sock.settimeout(timeout)

    @classmethod
    def connect(cls, path=None, timeout=DEFAULT_TIMEOUT):
        """Connects to `path`, else to `default_socket_path()`."""
        path = path or default_socket_path()
        if path.startswith("\\\\.\\pipe\\") or not hasattr(socket, "AF_UNIX"):
            raise AtlasBridgeError(
                "{}: this client speaks Unix sockets only; on Windows use the Rust client"
                .format(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise AtlasBridgeError(
                "atlasbridged is not running (nothing listens on {}): {}".format(
                    path, e.strerror)) from e
        except OSError as e:
            sock.close()
            raise AtlasBridgeError("cannot connect to {}: {}".format(path, e)) from e
        return cls(sock, path, timeout)

    def close(self):
        """Closes the connection."""
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the wire ---------------------------------------------------------------------------

    def call(self, method, params=None):
        """Sends one request and returns its `result`; raises AtlasBridgeError on an error."""
        request_id = next(self._ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        line = json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n"
        if len(line) > MAX_LINE_BYTES + 1:
            raise AtlasBridgeError("request of {} bytes exceeds the {}-byte limit".format(
                len(line) - 1, MAX_LINE_BYTES))
        try:
            self._sock.sendall(line)
        except socket.timeout as e:
            raise AtlasBridgeError("atlasbridged did not take the request within {}s".format(
                self.timeout)) from e
        except OSError as e:
            # A daemon that refuses the connection sends one error line, then closes.
            refusal = self._refusal()
            if refusal is not None:
                raise refusal from e
            raise AtlasBridgeError("connection to atlasbridged failed: {}".format(e)) from e
        while True:
            message = self._read_message()
            if "id" not in message:
                if self._subscribed:
                    self._pending.append(message)
                continue
            if message["id"] == request_id:
                return self._outcome(message)
            # An error with id null answers a line the daemon could not read: ours, as we send
            # one request at a time.
            if message["id"] is None and "error" in message:
                return self._outcome(message)

    def _outcome(self, message):
        if "error" in message:
            raise AtlasBridgeError.from_error_object(message["error"])
        if "result" not in message:
            raise AtlasBridgeError("a reply without result or error: {!r}".format(message))
        return message["result"]

    def _refusal(self):
        try:
            message = self._read_message()
        except (AtlasBridgeError, OSError):
            return None
        if isinstance(message.get("error"), dict):
            return AtlasBridgeError.from_error_object(message["error"])
        return None

    def _read_message(self):
        """The next JSON message from the daemon."""
        while True:
            newline = self._buf.find(b"\n")
            if newline < 0:
                if len(self._buf) > MAX_LINE_BYTES + 1:
                    raise AtlasBridgeError("a line from atlasbridged is over the 1 MiB limit")
                self._fill()
                continue
            line = bytes(self._buf[:newline])
            del self._buf[:newline + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE_BYTES:
                raise AtlasBridgeError("a line from atlasbridged is over the 1 MiB limit")
            if not line.strip(b" \t"):
                continue
            try:
                message = json.loads(line.decode("utf-8"))
            except ValueError as e:
                raise AtlasBridgeError("atlasbridged sent a line that is not JSON: {}".format(
                    e)) from e
            if not isinstance(message, dict):
                raise AtlasBridgeError("atlasbridged sent {!r}, not a message".format(message))
            return message

    def _fill(self):
        try:
            chunk = self._sock.recv(64 * 1024)
        except socket.timeout as e:
            raise AtlasBridgeError("atlasbridged did not answer within {}s".format(
                self._sock.gettimeout())) from e
        except OSError as e:
            raise AtlasBridgeError("connection to atlasbridged failed: {}".format(e)) from e
        if not chunk:
            raise ConnectionClosed()
        self._buf += chunk

    # -- methods ----------------------------------------------------------------------------

    def hello(self, client_name="agent.py/1"):
        """`hello`: the daemon's version, edition, feature flags and this connection's role."""
        return self.call("hello", {"protocol": PROTOCOL_VERSION, "client": client_name})

    def status(self):
        """`daemon.status`: version, health, trace head, sessions, …"""
        return self.call("daemon.status")

    def evaluate(self, session_id, prompt_id, prompt_type, prompt_text, confidence, **fields):
        """`decision.evaluate`: the policy decides one prompt event, durably.

        `fields`: agent_id, tool_id, repo, branch, ci_status, session_tags, idempotency_key,
        policy_hash. Returns the decision (`action`, `reply_value`, `explanation`, `seq`, …).
        """
        params = {
            "session_id": session_id,
            "prompt_id": prompt_id,
            "prompt_type": prompt_type,
            "prompt_text": prompt_text,
            "confidence": confidence,
        }
        params.update({k: v for k, v in fields.items() if v is not None})
        return self.call("decision.evaluate", params)

    def record(self, session_id, prompt_id, prompt_type, action_taken, **fields):
        """`decision.record`: writes a decision made elsewhere (a person's answer) to the trace.

        `fields`: reply_value, human_actor, escalation_status, confidence, prompt_text,
        agent_id, tool_id, repo, branch, ci_status, session_tags, idempotency_key.
        Returns `entry_id`, `seq`, `entry_hash`, `risk_level`.
        """
        params = {
            "session_id": session_id,
            "prompt_id": prompt_id,
            "prompt_type": prompt_type,
            "action_taken": action_taken,
        }
        params.update({k: v for k, v in fields.items() if v is not None})
        return self.call("decision.record", params)

    def start_session(self, session_id, **fields):
        """`session.start`: later events of the session inherit the fields given."""
        params = {"session_id": session_id}
        params.update({k: v for k, v in fields.items() if v is not None})
        return self.call("session.start", params)

    def end_session(self, session_id):
        """`session.end`: forgets a live session and returns it as it was."""
        return self.call("session.end", {"session_id": session_id})

    def subscribe(self, from_seq=None, timeout=None):
        """`trace.subscribe`: an iterator of trace entries (dicts, as stored), in seq order.

        Stored entries from `from_seq` first, when given. The daemon cannot end a subscription,
        so this connection is the subscription's from now on. Each entry is waited for up to
        `timeout` seconds (None: as long as it takes). When the daemon ends the subscription,
        iterating raises SubscriptionEnded.
        """
        if self._subscribed:
            raise AtlasBridgeError("this connection already has a trace subscription")
        params = {} if from_seq is None else {"from_seq": from_seq}
        self._subscribed = True
        try:
            started = self.call("trace.subscribe", params)
        except AtlasBridgeError:
            self._subscribed = False
            self._pending.clear()
            raise
        self._sock.settimeout(timeout)
        return Subscription(self, started)

    def _next_notification(self):
        if self._pending:
            return self._pending.popleft()
        while True:
            message = self._read_message()
            if "id" not in message and "method" in message:
                return message


class Subscription:
    """The entries of a trace subscription; `started` is the daemon's answer to it."""

    def __init__(self, client, started):
        self.started = started
        self._client = client
        self._ended = False

    def __iter__(self):
        return self

    def __next__(self):
        while not self._ended:
            try:
                note = self._client._next_notification()
            except ConnectionClosed:
                self._ended = True
                raise
            method = note.get("method")
            params = note.get("params") or {}
            if method == "trace.entry":
                return params
            if method == "trace.subscription_ended":
                self._ended = True
                raise SubscriptionEnded(params.get("reason", "unknown"), params.get("last_seq"))
        raise StopIteration


# -- the command line -------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Ask atlasbridged about one prompt. Exit status: 0 auto_reply, "
        "10 require_human, 11 deny (also on any error), 12 notify_only.")
    parser.add_argument("--socket", help="the daemon's socket [default: $ATLASBRIDGE_SOCKET, "
                        "else the platform default]")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for an answer (default 30)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument("--session", default="agent-py", help="the agent session")
    parser.add_argument("--prompt", help="the prompt text (read, never stored)")
    parser.add_argument("--type", dest="prompt_type", default="yes_no",
                        help="yes_no, confirm_enter, multiple_choice or free_text")
    parser.add_argument("--confidence", default="high", help="high, medium or low")
    parser.add_argument("--prompt-id", help="the prompt's id [default: a new one]")
    parser.add_argument("--agent", help="the agent")
    parser.add_argument("--tool", help="the agent's tool")
    parser.add_argument("--human-reply", help="when a person must answer: their answer, "
                        "recorded with decision.record")
    parser.add_argument("--follow", action="store_true",
                        help="print trace entries as JSON lines as they are written")
    parser.add_argument("--from-seq", type=int, help="with --follow: replay from this seq")
    parser.add_argument("--count", type=int, help="with --follow: stop after this many")
    args = parser.parse_args(argv)
    if not args.follow and args.prompt is None:
        parser.error("--prompt is required (or --follow)")
    return args


def decide(client, args):
    """Evaluates the prompt; records the person's answer when one is needed and given."""
    # A new id per run, so that every run is a new decision (as `atlasbridge decide` does).
    prompt_id = args.prompt_id or "agent-py-{}-{}".format(time.time_ns() // 1000, os.getpid())
    answer = client.evaluate(args.session, prompt_id, args.prompt_type, args.prompt,
                             args.confidence, agent_id=args.agent, tool_id=args.tool)
    action = answer.get("action")
    if args.json:
        print(json.dumps(answer, sort_keys=True))
    else:
        rule = answer.get("matched_rule") or "default"
        value = " {}".format(json.dumps(answer.get("reply_value", ""))) \
            if action == "auto_reply" else ""
        print("{}{} (rule {})".format(action, value, rule))
        print("  {}".format(answer.get("explanation", "")))
        if answer.get("seq") is not None:
            print("  recorded at seq {}".format(answer["seq"]))
    if action == "require_human" and args.human_reply is not None:
        recorded = client.record(args.session, prompt_id, args.prompt_type, "human_reply",
                                 reply_value=args.human_reply,
                                 human_actor=os.environ.get("USER", "unknown"),
                                 escalation_status="resolved")
        if not args.json:
            print("  the person's answer {} recorded at seq {}".format(
                json.dumps(args.human_reply), recorded.get("seq")))
    # An action this client does not know asks a person, as `atlasbridge decide` does.
    return EXIT_STATUS.get(action, EXIT_REQUIRE_HUMAN)


def follow(client, args):
    """Prints entries until `--count` of them, or until the daemon ends the subscription."""
    shown = 0
    try:
        for entry in client.subscribe(args.from_seq):
            print(json.dumps(entry, sort_keys=True), flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                return 0
    except SubscriptionEnded as ended:
        print("agent.py: {}".format(ended), file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with AtlasBridgeClient.connect(args.socket, args.timeout) as client:
            if args.follow:
                return follow(client, args)
            return decide(client, args)
    except AtlasBridgeError as e:
        if args.follow:
            print("agent.py: {}".format(e), file=sys.stderr)
            return 1
        why = "the protocol says deny" if e.is_deny else "no decision"
        print("agent.py: {}; {}: denying".format(e, why), file=sys.stderr)
        return EXIT_DENY
    except Exception as e:  # noqa: BLE001 - fail closed, whatever went wrong
        if args.follow:
            raise
        print("agent.py: unexpected {}: {}; no decision: denying".format(
            type(e).__name__, e), file=sys.stderr)
        return EXIT_DENY


if __name__ == "__main__":
    sys.exit(main())
