#!/usr/bin/env python3
"""Structured outputs against the reference JSON Schema validator (Python's jsonschema).

For every case in json_schemas/: texts drawn at random from the schema's grammar all parse and
validate (the grammar is sound); the case's valid instances, written as json.dumps writes them
(compact, ASCII-escaped and indented), are accepted whole (it is not too narrow for them); its
refused texts, each invalid for the validator, are refused; its "narrower" texts, valid for
the validator, are refused by design (properties out of the schema's order, lone surrogate
escapes, \\u escapes of a pattern's characters, a newline before a pattern's $, which Python's
$ allows and ECMA-262's does not), which the case documents and the test keeps true. Unsupported schemas fail with their
message. Forced tool calls, in each call format, are drawn too: each parses as the format's
reader expects, names an offered function (the forced one when named) and has arguments its
parameters validate; one call only when parallel calls are off.
Usage: json_schema_oracle.py STRUCTURED_SAMPLE_TOOL
"""
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import jsonschema
except ImportError:
    print("FAILED: python3-jsonschema is needed (scripts/install-deps.sh)")
    sys.exit(1)

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "json_schemas")
TOOL = sys.argv[1]
failures = []


def run(args, stdin=None):
    out = subprocess.run([TOOL] + args, input=stdin, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.split("\n") if line]


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def schema_file(schema):
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(schema, f)
    f.close()
    return f.name


# Formats are asserted: jsonschema's own checks (date, uuid, ipv4, email, uri), and RFC 3339's time and
# date-time (Debian has no rfc3339-validator for jsonschema to use): the form, then Python's parser.
FORMATS = jsonschema.FormatChecker()
TIME = r"\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)"


@FORMATS.checks("time", raises=ValueError)
def is_time(s):
    return not isinstance(s, str) or (re.fullmatch(TIME, s) is not None and datetime.time.fromisoformat(s.upper()) is not None)


@FORMATS.checks("date-time", raises=ValueError)
def is_date_time(s):
    return not isinstance(s, str) or (re.fullmatch(r"\d{4}-\d\d-\d\d[Tt]" + TIME, s) is not None and
                                      datetime.datetime.fromisoformat(s.upper()) is not None)


# RFC 1123 host names and RFC 3339's durations (Appendix A), which jsonschema checks only with
# packages Debian does not have (fqdn, isoduration).
@FORMATS.checks("hostname", raises=ValueError)
def is_hostname(s):
    label = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    return not isinstance(s, str) or (len(s) <= 253 and re.fullmatch(rf"{label}(\.{label})*", s) is not None)


@FORMATS.checks("duration", raises=ValueError)
def is_duration(s):
    second, minute, hour = r"\d+S", r"\d+M(\d+S)?", r"\d+H(\d+M(\d+S)?)?"
    time = rf"T({hour}|{minute}|{second})"
    date = rf"(\d+D|\d+M(\d+D)?|\d+Y(\d+M(\d+D)?)?)({time})?"
    return not isinstance(s, str) or re.fullmatch(rf"P({date}|{time}|\d+W)", s) is not None


# URIs: jsonschema checks them with rfc3987 (Debian's python3-rfc3987); without it, it would not.
if "uri" not in FORMATS.checkers:
    print("FAILED: python3-rfc3987 is needed to check URIs (scripts/install-deps.sh)")
    sys.exit(1)


def validator(schema):
    """The validator of the draft the schema names ($schema), 2020-12 where it names none."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=FORMATS)


def sample_case(name, case):
    schema = case["schema"]
    path = schema_file(schema)
    v = validator(schema)
    draws = run(["sample", path, "300", "7"])
    check(not (isinstance(draws[0], dict) and "error" in draws[0]), f"{name}: compiled ({draws[0]})")
    texts = [t for t in draws if isinstance(t, str)]
    check(len(texts) >= 270, f"{name}: {len(texts)} of 300 draws ended")
    for t in texts:
        try:
            instance = json.loads(t)
        except json.JSONDecodeError as e:
            check(False, f"{name}: a drawn text does not parse: {t!r} ({e})")
            continue
        errors = list(v.iter_errors(instance))
        check(not errors, f"{name}: a drawn text is invalid: {t!r}: {errors[:1]}")
    # The drawn texts cover the schema: each optional property of the top object appears.
    if isinstance(schema, dict) and "properties" in schema and schema.get("type") == "object":
        seen = set()
        for t in texts:
            seen |= set(json.loads(t).keys())
        for key in schema["properties"]:
            check(key in seen, f"{name}: no draw writes the property {key!r}")
    written, escaped = [], []
    for instance in case.get("valid", []):
        check(not list(v.iter_errors(instance)), f"{name}: the case's valid instance is invalid: {instance}")
        written += [json.dumps(instance, ensure_ascii=False), json.dumps(instance, ensure_ascii=False, indent=2),
                    json.dumps(instance, ensure_ascii=False, separators=(",", ":"))]
        escaped += [json.dumps(instance), json.dumps(instance, indent=2)]
    # A pattern's characters are written one way (raw UTF-8 and the short escapes): where the case
    # says so, \u escapes of them are refused by design.
    if case.get("ascii_escapes") == "narrower":
        case.setdefault("narrower", []).extend(t for t in escaped if t not in written)
    else:
        written += escaped
    refused = case.get("refused", [])
    for t in refused:
        try:
            invalid = bool(list(v.iter_errors(json.loads(t))))
        except json.JSONDecodeError:
            invalid = True
        check(invalid, f"{name}: the case's refused text is valid: {t!r}")
    narrower = case.get("narrower", [])
    for t in narrower:
        check(not list(v.iter_errors(json.loads(t))), f"{name}: the case's narrower text is invalid: {t!r}")
    lines = "".join(json.dumps(t) + "\n" for t in written + refused + narrower)
    verdicts = run(["check", path], stdin=lines)
    for t, ok in zip(written, verdicts[:len(written)]):
        check(ok == 1, f"{name}: a valid text is refused: {t!r}")
    for t, ok in zip(refused + narrower, verdicts[len(written):]):
        check(ok == 0, f"{name}: a text the grammar should refuse is accepted: {t!r}")
    os.unlink(path)
    print(f"{name}: {len(texts)} draws valid, {len(written)} valid texts accepted, {len(refused)} invalid refused")


def error_cases(errors):
    for e in errors:
        path = schema_file(e["schema"])
        out = run(["sample", path, "1", "1"])[0]
        check(isinstance(out, dict) and e["error"] in out.get("error", ""), f"schema {e['schema']}: {out} lacks {e['error']!r}")
        os.unlink(path)
    # A schema whose grammar would be too large.
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1024} for i in range(600)}}
    path = schema_file(big)
    out = run(["sample", path, "1", "1"])[0]
    check(isinstance(out, dict) and "too large a grammar" in out.get("error", ""), f"600 long strings: {out}")
    os.unlink(path)
    print(f"errors: {len(errors) + 1} unsupported schemas refused with their reason")


def parse_calls(fmt, text):
    """The calls in `text` as the format's reader takes them: [(name, arguments)]."""
    if fmt == "hermes":
        pieces = re.split(r"\n(?=<tool_call>)", text)
        out = []
        for p in pieces:
            m = re.fullmatch(r"<tool_call>\n(.*)\n</tool_call>", p, re.S)
            assert m, p
            j = json.loads(m.group(1))
            out.append((j["name"], j["arguments"]))
        return out
    if fmt == "llama3_json":
        out = []
        for p in text.split("; "):
            j = json.loads(p)
            out.append((j["name"], j["parameters"]))
        return out
    if fmt == "harmony":  # one message to the function, its arguments the body
        m = re.fullmatch(r"<\|channel\|>commentary to=functions\.([A-Za-z0-9_-]+) <\|constrain\|>json<\|message\|>(.*)", text, re.S)
        assert m, text
        return [(m.group(1), json.loads(m.group(2)))]
    marker = "<|tool_call|>" if fmt == "granite" else "[TOOL_CALLS]"
    assert text.startswith(marker), text
    return [(j["name"], j["arguments"]) for j in json.loads(text[len(marker):])]


def tool_cases():
    for file in sorted(os.listdir(os.path.join(CASES, "tools"))):
        path = os.path.join(CASES, "tools", file)
        tools = json.load(open(path))
        functions = {t["function"]["name"]: t["function"] for t in tools}
        for fmt in ("hermes", "llama3_json", "mistral", "granite", "harmony"):
            for forced in ["-"] + list(functions):
                for parallel in ("0", "1"):
                    texts = [t for t in run(["calls", fmt, path, forced, parallel, "40", "3"]) if isinstance(t, str)]
                    check(len(texts) >= 36, f"{file} {fmt} {forced} {parallel}: {len(texts)} of 40 draws ended")
                    names = set()
                    for t in texts:
                        try:
                            calls = parse_calls(fmt, t)
                        except Exception as e:  # noqa: BLE001 - any failure to read is a finding
                            check(False, f"{fmt}: a drawn reply does not read as calls: {t!r} ({e})")
                            continue
                        check(parallel == "1" or len(calls) == 1, f"{fmt}: several calls without parallel calls: {t!r}")
                        for name, args in calls:
                            names.add(name)
                            check(name in functions and (forced == "-" or name == forced), f"{fmt}: call of {name!r}: {t!r}")
                            check(isinstance(args, dict), f"{fmt}: arguments not an object: {t!r}")
                            params = functions.get(name, {}).get("parameters", {"type": "object"})
                            errors = list(validator(params).iter_errors(args))
                            check(not errors, f"{fmt}: arguments of {name} invalid: {t!r}: {errors[:1]}")
                    if forced == "-":
                        check(names == set(functions), f"{file} {fmt}: draws call {sorted(names)}, not every function")
            print(f"tools {file} {fmt}: forced and required calls read and validate")
    out = run(["calls", "hermes", path, "nope", "0", "1", "1"])[0]
    check(isinstance(out, dict) and "no function named 'nope'" in out["error"], f"forcing an unknown function: {out}")


for file in sorted(os.listdir(CASES)):
    if not file.endswith(".json"):
        continue
    case = json.load(open(os.path.join(CASES, file)))
    if "errors" in case:
        error_cases(case["errors"])
    else:
        sample_case(file[:-5], case)
tool_cases()
if failures:
    print(f"{len(failures)} failures")
    sys.exit(1)
print("json_schema_oracle: all checks passed")
