using System.Text.Json;
using Kvq.Chat;

namespace Kvq.Tests.Chat;

/// <summary>One Jinja feature per template (whitespace control, loop variables, namespace, tojson, slicing, ...),
/// rendered by @huggingface/jinja into Chat/Snippets.json (dev/chat-templates/snippets.mjs): exact match.</summary>
public sealed class ChatTemplateSnippetTests
{
    private static JsonDocument Load() => JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Chat", "Snippets.json")));

    public static TheoryData<string> Names()
    {
        using var doc = Load();
        var data = new TheoryData<string>();
        foreach (var s in doc.RootElement.GetProperty("snippets").EnumerateArray()) data.Add(s.GetProperty("name").GetString()!);
        return data;
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void RendersAsTheReference(string name)
    {
        using var doc = Load();
        var snippet = doc.RootElement.GetProperty("snippets").EnumerateArray().Single(s => s.GetProperty("name").GetString() == name);
        var variables = doc.RootElement.GetProperty("variables").EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone());
        var template = ChatTemplate.Parse(snippet.GetProperty("template").GetString()!);
        string actual = template.Render([], new ChatTemplateContext { Variables = variables });
        Assert.Equal(snippet.GetProperty("expected").GetString(), actual);
    }
}
