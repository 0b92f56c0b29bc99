using Kvq.Chat;

namespace Kvq.Tests.Chat;

/// <summary>
/// Behaviour where @huggingface/jinja (the goldens' reference) departs from Python's Jinja, which transformers runs
/// and models were trained with; Kvq follows Python. Expected values are Python's (jinja2 3.1, transformers'
/// settings), worked out by hand.
/// </summary>
public sealed class ChatTemplatePythonSemanticsTests
{
    private static string Render(string source, Dictionary<string, object?>? variables = null, TimeProvider? clock = null) =>
        ChatTemplate.Parse(source).Render([], new ChatTemplateContext { Variables = variables, Clock = clock ?? TimeProvider.System });

    [Theory]
    [InlineData("{{ true }} {{ false }} {{ none }}", "True False None")]
    [InlineData("{{ [1, 'a', none, true] }}", "[1, 'a', None, True]")]
    [InlineData("{{ {'k': 1.0, 'q': \"it's\"} }}", "{'k': 1.0, 'q': \"it's\"}")]
    [InlineData("{{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 0.00001 }} {{ 2.0 }} {{ 1e16 }} {{ 1e15 }}",
        "1e+20 0.30000000000000004 0.3333333333333333 1e-05 2.0 1e+16 1000000000000000.0")]
    [InlineData("[{{ '\n\n  x \n'.strip('\n') }}] {{ 'xxhixx'.lstrip('x') }} {{ 'xxhixx'.rstrip('x') }}", "[  x ] hixx xxhi")]
    [InlineData("{{ 'hELLO'|capitalize }} {{ 'hELLO'.capitalize() }}", "Hello Hello")]
    [InlineData("{{ \"they're bill's\".title() }}|{{ \"they're bill's\"|title }}", "They'Re Bill'S|They're Bill's")]
    [InlineData("{{ ['a', 'A', 'b', 'a']|unique|join }} {{ ['a', 'A']|unique(case_sensitive=true)|join }}", "ab aA")]
    [InlineData("{{ [0, 1, 2, 3]|select('odd')|join }} {{ [0, 1, '', 'x']|select|list|length }} {{ [1, 2, 3]|reject('even')|join }}", "13 2 13")]
    [InlineData("{{ ['x', 'y']|count }} {{ 'héllo'|length }} {{ '🦙🦙'|length }}", "2 5 2")]
    [InlineData("[{% for x in nothing %}x{% else %}none{% endfor %}]", "[none]")]
    [InlineData("{% raw %}{{ kept }} {% if %}{% endraw %}!", "{{ kept }} {% if %}!")]
    [InlineData("{{ 1_000 + 1 }}", "1001")]
    [InlineData("{{ -7 % 3 }} {{ 7 % -3 }} {{ -7.5 // 2 }}", "2 -2 -4.0")]
    [InlineData("{% for x in ['a', 'b', 'c'] %}{{ loop.previtem|default('^') }}{{ x }}{{ loop.nextitem|default('$') }}{{ loop.cycle('+', '-') }} {% endfor %}",
        "^ab+ abc- bc$+ ")]
    [InlineData("{% set a, b = 1, 2 %}{{ b }}{{ a }}", "21")]
    [InlineData("{{ 'a-b-c'.split('-', 1)|join('|') }} {{ 'a b c'.rsplit(None, 1)|join('|') }}", "a|b-c a b|c")]
    [InlineData("{{ 'x'|e }}{{ '<a href=\"q\">'|escape }}", "x&lt;a href=&#34;q&#34;&gt;")]
    [InlineData("{{ [3, 1, 2]|sort|join }} {{ ['b', 'A', 'c']|sort|join }} {{ [3, 1, 2]|max }} {{ [3, 1, 2]|sum }}", "123 Abc 3 6")]
    [InlineData("{{ {'b': 1, 'a': 2}|dictsort|map('first')|join }} {{ {'b': 1}|tojson(sort_keys=true) }}", "ab {\"b\": 1}")]
    [InlineData("{{ 'x' if 1 else 'y' }}{{ 'z' if 0 }}|{{ (1, 2)|length }}", "x|2")]
    public void FollowsPython(string source, string expected) => Assert.Equal(expected, Render(source));

    [Fact]
    public void StrftimeNowReadsTheInjectedClock()
    {
        var clock = ChatFixtures.FixedClock(new DateTimeOffset(2024, 9, 5, 14, 30, 0, TimeSpan.Zero));
        Assert.Equal("05 September 2024, 5 Sep 14:30 Thu", Render("{{ strftime_now('%d %B %Y, %-d %b %H:%M %a') }}", clock: clock));
    }

    /// <summary>The case the reference cannot render (it has no "reject" filter): Llama 3.1 with builtin tools.</summary>
    [Fact]
    public void Llama31BuiltinToolsListsAllButTheCodeInterpreter()
    {
        var template = ChatFixtures.Template("llama-3.1");
        var context = new ChatTemplateContext
        {
            BosToken = "<|begin_of_text|>",
            EosToken = "<|eot_id|>",
            Variables = new Dictionary<string, object?> { ["builtin_tools"] = new[] { "brave_search", "wolfram_alpha", "code_interpreter" } },
        };
        string prompt = template.Render([new("system", "You are a helpful assistant."), new("user", "Search the web.")], context);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" +
            "Environment: ipython\nTools: brave_search, wolfram_alpha\n\n" +
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" +
            "You are a helpful assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nSearch the web.<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n", prompt);
    }
}
