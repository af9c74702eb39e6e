"""A custom judge file is data (issue 30, finding 6): its template renders in Jinja's
sandbox, and a template that reaches for Python internals is refused naming the file,
when the judge loads if it can be seen there, else when it renders, never run."""

from __future__ import annotations

import textwrap

import pytest

from magistrate.judges import get_judge, render_messages
from tests.conftest import EXAMPLES, invoke_cli

FIELDS = "Q: {{ prompt }} A: {{ response_a }} B: {{ response_b }}"

# Escapes Jinja's own documentation and public write-ups use; MARKER is the file the
# command would create.
SEEN_AT_LOAD = {
    "cycler-globals": "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "joiner-globals": "{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "subclasses": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% endfor %}",
    "subscript": "{{ cycler['__init__']['__globals__']['os'].system('touch MARKER') }}",
    "attr-filter": "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch MARKER') }}",
    "in-a-block": "{% if prompt %}{% set x = namespace.__init__.__globals__ %}{% endif %}",
}
# Built at render time: only the sandbox can see them.
SEEN_AT_RENDER = {
    "joined-name": "{{ cycler['__in' ~ 'it__']['__glo' ~ 'bals__']['os'].system('touch MARKER') }}",
    "format-string": "{{ '{0.__class__.__mro__}'.format(prompt) }}",
    "mutation": "{{ {}.update(x=1) }}",  # the immutable sandbox: a template changes nothing
}


def _judge(tmp_path, expression: str, name: str = "evil.yaml"):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""\
        name: evil-judge
        template: "{FIELDS} {expression.replace('MARKER', str(marker))}"
        pattern: '\\[\\[(A|B)\\]\\]'
    """), encoding="utf-8")
    return str(path), marker


@pytest.mark.parametrize("expression", SEEN_AT_LOAD.values(), ids=SEEN_AT_LOAD.keys())
def test_an_escape_is_refused_when_the_judge_loads(tmp_path, expression):
    path, marker = _judge(tmp_path, expression)
    with pytest.raises(ValueError) as excinfo:
        render_messages(get_judge(path), "q", "a", "b")
    message = str(excinfo.value)
    assert path in message and "evil-judge" in message and "Python internals" in message, message
    assert "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("expression", SEEN_AT_RENDER.values(), ids=SEEN_AT_RENDER.keys())
def test_an_escape_built_at_render_time_is_refused_by_the_sandbox(tmp_path, expression):
    path, marker = _judge(tmp_path, expression)
    profile = get_judge(path)
    with pytest.raises(ValueError) as excinfo:
        render_messages(profile, "q", "a", "b")
    message = str(excinfo.value)
    assert path in message and "evil-judge" in message and "Python internals" in message, message
    assert "\n" not in message
    assert not marker.exists()


def test_an_ordinary_template_still_renders_in_the_sandbox(tmp_path):
    path = tmp_path / "fine.yaml"
    path.write_text(textwrap.dedent("""\
        name: fine
        template: |
          {% for label in ['one', 'two'] %}{{ loop.index }}={{ label|upper }} {% endfor %}
          {{ prompt.strip() }} | {{ response_a|length }} | {{ response_b }}{{ ' ' ~ cycler('x').next() }}
        pattern: '\\[\\[(A|B)\\]\\]'
    """), encoding="utf-8")
    (message,) = render_messages(get_judge(str(path)), " q ", "abc", "b {{ x }} {% raw %}")
    assert message["content"] == "1=ONE 2=TWO \nq | 3 | b {{ x }} {% raw %} x\n"


@pytest.mark.parametrize("expression", [SEEN_AT_LOAD["cycler-globals"], SEEN_AT_RENDER["joined-name"]],
                         ids=["seen-at-load", "seen-at-render"])
def test_render_refuses_in_one_line_and_runs_nothing(tmp_path, expression):
    path, marker = _judge(tmp_path, expression)
    result = invoke_cli("render", "--judge", path, "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--limit", "2")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert path in result.stderr and "Python internals" in result.stderr
    assert not marker.exists()


def test_a_template_that_does_not_parse_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(f'name: broken\ntemplate: "{FIELDS} {{% if %}}"\npattern: "(A|B)"\n', encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        get_judge(str(path))
    message = str(excinfo.value)
    assert str(path) in message and "template" in message and "line 1" in message and "\n" not in message
