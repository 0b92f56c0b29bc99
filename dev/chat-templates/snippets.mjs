// Small templates, one Jinja feature each, with the variables they render with. make-goldens.mjs renders them into
// tests/Kvq.Tests/Chat/Snippets.json. Only features where @huggingface/jinja follows Python's Jinja are here (it
// renders booleans as "true" and lists as JSON, and str.strip ignores its argument): the C# tests check those
// differences against Python's behaviour by hand.
export const snippetVariables = {
  items: ["a", "b", "c", "d"],
  d: { x: 1, y: "two", z: [3, 4] },
  msgs: [
    { role: "system", content: "S" },
    { role: "user", content: "U1" },
    { role: "assistant", content: "A1" },
    { role: "user", content: "U2" },
  ],
};

export const snippets = [
  ["whitespace_control", "a  {%- if true %} b {% endif -%}  c\n  {{- 'd' -}}  \n e{# comment #} f {#- x -#} g"],
  ["trim_and_lstrip_blocks", "<ul>\n  {% for x in items %}\n    <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n"],
  ["comment_lines", "A\n{# a comment on its own line #}\nB\n    {#- stripped #}\nC"],
  ["loop_variables", "{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.length }}:{{ x }}{% if loop.first %}F{% endif %}{% if loop.last %}L{% endif %};{% endfor %}"],
  ["for_else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in items %}{{ x }}{% else %}never{% endfor %}"],
  ["for_inline_if", "{% for x in items if x != 'b' %}{{ loop.index }}{{ x }}{{ loop.length }} {% endfor %}"],
  ["for_unpacking", "{% for k, v in d.items() %}{{ k }}={{ v|tojson }};{% endfor %}|{% for k, v in d|items %}{{ k }}{% endfor %}|{% for k in d %}{{ k }}{% endfor %}"],
  ["nested_loops", "{% for a in [1, 2] %}{% for b in ['x', 'y'] %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}"],
  ["namespace", "{% set ns = namespace(count=0, found=false) %}{% for x in items %}{% set ns.count = ns.count + 1 %}{% if x == 'c' %}{% set ns.found = loop.index %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}"],
  ["namespace_later_attribute", "{% set ns = namespace() %}{% set ns.total = 0 %}{% for m in msgs %}{% set ns.total = ns.total + m.content|length %}{% endfor %}{{ ns.total }}"],
  ["tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'q\"\\\\ \n é 🦙'|tojson }}|{{ [1, 'a', none, true, false, [], {}]|tojson }}|{{ msgs[0]|tojson(indent=4) }}"],
  ["slicing", "{{ items[1:]|join(',') }}|{{ items[::-1]|join(',') }}|{{ items[:-1]|join(',') }}|{{ items[-2:]|join(',') }}|{{ items[0:10:2]|join(',') }}|{{ 'hello'[1:4] }}|{{ 'hello'[::-1] }}|{{ items[-1] }}|{{ items[5:]|length }}"],
  ["string_methods", "{{ '  hi  '.strip() }}|{{ 'a,b,,c'.split(',')|length }}|{{ 'a b  c'.split()|join('_') }}|{{ 'Hello World'.upper() }}{{ 'ABC'.lower() }}|{{ 'T' if 'xyz'.startswith('x') and 'abc'.endswith('bc') else 'F' }}|{{ 'a-b-c'.replace('-', '+') }}|{{ 'hello world'.title() }}|{{ 'k: v'.split(': ')[1] }}"],
  ["filters", "{{ items|length }} {{ items|first }} {{ items|last }} {{ 'abc'|upper }} {{ 'ABC'|lower }} {{ 'hello world'|title }} {{ missing|default('dflt') }} {{ ''|default('e', true) }} {{ 'aXbX'|replace('X', '-') }} {{ '3'|int + 1 }} {{ '2.5'|float }} {{ -5|abs }} {{ [3, 1, 2]|join('') }} {{ '  pad  '|trim }}! {{ 42|string ~ '!' }}"],
  ["select_and_map", "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join('+') }}|{{ msgs|rejectattr('role', 'equalto', 'user')|list|length }}|{{ msgs|map(attribute='role')|first }}"],
  ["indent", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'x\\ny'|indent(4, true) }}"],
  ["in_and_ternary", "{{ 'yes' if 'b' in items else 'no' }} {{ 'yes' if 'z' not in items else 'no' }} {{ 'yes' if 'x' in d else 'no' }} {{ 'yes' if 'ell' in 'hello' else 'no' }} {{ 'a' if none else 'b' }}"],
  ["if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}"],
  ["macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }} {{ greet(name='Cy') }}"],
  ["call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inside {{ items[0] }}{% endcall %}"],
  ["set_block_and_filter_block", "{% set greeting %}Hello {{ items[0] }}{% endset %}{{ greeting|upper }}|{% filter upper %}shout {{ items[1] }}{% endfilter %}"],
  ["undefined", "[{{ nothing }}][{{ 'd' if nothing is defined else 'u' }}][{{ 'T' if not nothing else 'F' }}][{{ d.missing }}][{{ 'u' if d.missing is undefined else 'd' }}][{{ nothing|default('fallback') }}]"],
  ["tests", "{{ 'T' if 'x' is string else 'F' }}{{ 'T' if d is mapping else 'F' }}{{ 'T' if items is iterable else 'F' }}{{ 'T' if 3 is number else 'F' }}{{ 'T' if none is none else 'F' }}{{ 'T' if items is sequence else 'F' }}{{ 'T' if 4 is even else 'F' }}{{ 'T' if 3 is odd else 'F' }}{{ 'T' if d.z is not string else 'F' }}"],
  ["arithmetic", "{{ 7 // 2 }} {{ 7 % 3 }} {{ -7 // 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'a' ~ 1 ~ 'b' }} {{ 10 / 4 }} {{ 1.5 + 1 }} {{ 'ab' + 'cd' }} {{ 10 - 3 - 2 }}"],
  ["literals_and_escapes", "{{ 'tab\\there' }}|{{ \"it's\" }}|{{ 'say \\\"hi\\\"' }}|{{ 'snow\\u2603' }}|{{ {'k': 'v'}['k'] }}|{{ [1, 2, 3][1] }}|{{ ('a', 'b')[0] }}"],
  ["break_continue", "{% for x in items %}{% if x == 'b' %}{% continue %}{% endif %}{% if x == 'd' %}{% break %}{% endif %}{{ x }}{% endfor %}"],
];
