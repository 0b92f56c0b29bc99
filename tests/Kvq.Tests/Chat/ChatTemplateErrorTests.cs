using Kvq.Chat;

namespace Kvq.Tests.Chat;

/// <summary>Typed errors: what the template raised, syntax errors and render errors with their line and column,
/// and the bounds that stop a hostile template.</summary>
public sealed class ChatTemplateErrorTests
{
    private static readonly ChatTemplateContext Context = new() { BosToken = "<s>", EosToken = "</s>" };

    /// <summary>1-based line and column of the first occurrence of <paramref name="text"/> in <paramref name="source"/>.</summary>
    private static (int Line, int Column) Where(string source, string text)
    {
        int at = source.IndexOf(text, StringComparison.Ordinal);
        Assert.True(at >= 0, $"'{text}' not in the template");
        int lineStart = source.LastIndexOf('\n', Math.Max(0, at - 1)) + 1;
        return (source[..at].Count(c => c == '\n') + 1, at - lineStart + 1);
    }

    [Fact]
    public void GemmaRefusesSystemMessagesWithItsOwnMessage()
    {
        string source = ChatFixtures.TemplateSource("gemma-2");
        var e = Assert.Throws<ChatTemplateException>(() =>
            ChatTemplate.Parse(source).Render([new("system", "Be brief."), new("user", "Hi")], Context));
        Assert.Equal(ChatTemplateErrorKind.Raised, e.Kind);
        Assert.Equal("System role not supported", e.Reason);
        Assert.Equal(Where(source, "raise_exception('System role"), (e.Line, e.Column));
    }

    [Fact]
    public void MistralRefusesRolesThatDoNotAlternate()
    {
        string source = ChatFixtures.TemplateSource("mistral-nemo");
        var e = Assert.Throws<ChatTemplateException>(() =>
            ChatTemplate.Parse(source).Render([new("user", "One"), new("assistant", "Two"), new("assistant", "Three")], Context));
        Assert.Equal(ChatTemplateErrorKind.Raised, e.Kind);
        Assert.Equal("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...", e.Reason);
        Assert.Equal(Where(source, "raise_exception(\"After"), (e.Line, e.Column));
        Assert.Contains($"line {e.Line}, column {e.Column}", e.Message);
    }

    [Theory]
    [InlineData("Hello\n{% if x %}\nno end", 2, 4, "'if' opened here is never closed")]
    [InlineData("{{ 1 + }}", 1, 8, "expected a value, found '}}'")]
    [InlineData("line one\n  {{ x | }}", 2, 10, "expected a filter name")]
    [InlineData("{% for x in y %}{% endif %}", 1, 20, "unexpected 'endif' inside 'for'")]
    [InlineData("{% endfor %}", 1, 4, "unexpected 'endfor' with no block to close")]
    [InlineData("a\nb {{ 'unclosed }}", 2, 6, "string literal is never closed")]
    [InlineData("{% frobnicate %}", 1, 4, "unknown statement 'frobnicate'")]
    [InlineData("{{ x", 1, 1, "never closed with '}}'")]
    [InlineData("{# comment", 1, 1, "never closed with '#}'")]
    [InlineData("{{ x = 1 }}", 1, 6, "expected '}}', found '='")]
    [InlineData("{% set %}", 1, 8, "expected a variable name")]
    [InlineData("{{ f(a=1, 2) }}", 1, 11, "positional argument after a keyword argument")]
    [InlineData("{{ 'a' ? 'b' }}", 1, 8, "unexpected character '?'")]
    public void SyntaxErrorsNameLineAndColumn(string source, int line, int column, string reason)
    {
        var e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source));
        Assert.Equal(ChatTemplateErrorKind.Syntax, e.Kind);
        Assert.Contains(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
    }

    [Theory]
    [InlineData("{{ x.y }}", 1, 6, "'x' is undefined")]
    [InlineData("\n{{ messages[0].content.foo.bar }}", 2, 28, "'str object' has no attribute 'foo'")]
    [InlineData("{{ nothing + 1 }}", 1, 12, "'nothing' is undefined")]
    [InlineData("{{ nothing() }}", 1, 4, "'nothing' is undefined")]
    [InlineData("{{ 'a' + 1 }}", 1, 8, "unsupported operand types for +: 'str' and 'int'")]
    [InlineData("{{ 1 // 0 }}", 1, 6, "integer division by zero")]
    [InlineData("{{ 1 < 'a' }}", 1, 6, "'<' not supported between 'int' and 'str'")]
    [InlineData("{% set x = 1 %}{% set x.y = 2 %}", 1, 25, "only a namespace() can be changed")]
    [InlineData("{{ messages|frobnicate }}", 1, 12, "unknown filter 'frobnicate'")]
    [InlineData("{{ 1 is frobnicated }}", 1, 6, "unknown test 'frobnicated'")]
    [InlineData("{{ 'x'.strip(1, 2) }}", 1, 8, "strip() takes at most 1 argument, got 2")]
    [InlineData("{{ nothing|tojson }}", 1, 11, "'nothing' is undefined")]
    [InlineData("{% for a, b in [1] %}{% endfor %}", 1, 4, "cannot unpack 'int'")]
    public void RenderErrorsNameLineAndColumn(string source, int line, int column, string reason)
    {
        var template = ChatTemplate.Parse(source);
        var e = Assert.Throws<ChatTemplateException>(() => template.Render([new("user", "hello")], Context));
        Assert.Equal(ChatTemplateErrorKind.Render, e.Kind);
        Assert.Contains(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
    }

    [Fact]
    public void UndefinedValuesRenderEmptyAndAreFalsy()
    {
        var template = ChatTemplate.Parse("[{{ nothing }}|{{ messages[5] }}|{{ messages[0].missing }}|{{ nothing is defined }}|{{ not nothing }}|{{ nothing|length }}]");
        Assert.Equal("[|||False|True|0]", template.Render([new("user", "hi")], Context));
    }

    [Fact]
    public void OutputIsBounded()
    {
        var template = ChatTemplate.Parse("{% for i in range(50) %}0123456789{% endfor %}");
        Assert.Equal(500, template.Render([], Context).Length);
        var e = Assert.Throws<ChatTemplateException>(() => template.Render([], Context with { MaxOutputChars = 100 }));
        Assert.Contains("output longer than the limit of 100 characters", e.Reason);
        var doubling = ChatTemplate.Parse("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}");
        Assert.Contains("output limit", Assert.Throws<ChatTemplateException>(() => doubling.Render([], Context)).Reason);
    }

    [Fact]
    public void LoopsAndRecursionAreBounded()
    {
        var loops = ChatTemplate.Parse("{% for i in range(2000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}");
        Assert.Contains("loop iterations", Assert.Throws<ChatTemplateException>(() => loops.Render([], Context)).Reason);
        var recursion = ChatTemplate.Parse("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        Assert.Contains("nested more than", Assert.Throws<ChatTemplateException>(() => recursion.Render([], Context)).Reason);
        var deep = new string('(', 500) + "1" + new string(')', 500);
        Assert.Equal(ChatTemplateErrorKind.Syntax, Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{{ " + deep + " }}")).Kind);
    }
}
