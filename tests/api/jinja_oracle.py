"""Renders a template file with a JSON context the way transformers' apply_chat_template runs a
chat template (Jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
loopcontrols; tojson as json.dumps with ensure_ascii=False; raise_exception; strftime_now), with
the protocol of jinja_render_tool: the text and exit 0, "parse error: ..." exit 2, "render error:
..." exit 3.
    python3 jinja_oracle.py TEMPLATE CONTEXT.json
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


class Generation(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} rendered as its body, as transformers' AssistantTracker."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def main():
    source = open(sys.argv[1], encoding="utf-8").read()
    context = json.load(open(sys.argv[2], encoding="utf-8"))
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        template = env.from_string(source)
    except jinja2.exceptions.TemplateError as e:
        print(f"parse error: {e}")
        sys.exit(2)
    try:
        text = template.render(**context)
    except Exception as e:  # raise_exception, undefined attributes, type errors
        print(f"render error: {e}")
        sys.exit(3)
    sys.stdout.write(text)


main()
