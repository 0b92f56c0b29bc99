using System.Globalization;
using System.Text.Json;
using Kvq.Chat;

namespace Kvq.Tests.Chat;

/// <summary>
/// Published chat templates (Chat/Templates) rendered over the conversations of Chat/Goldens, which
/// dev/chat-templates/make-goldens.mjs rendered with @huggingface/jinja: the prompt must match exactly, and where the
/// reference's raise_exception fired, Kvq must raise the same message.
/// </summary>
public sealed class ChatTemplateGoldenTests
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var file in Directory.GetFiles(ChatFixtures.Dir("Goldens"), "*.json").Order(StringComparer.Ordinal))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
                if (!c.TryGetProperty("reference_error", out _))
                    data.Add(Path.GetFileNameWithoutExtension(file), c.GetProperty("name").GetString()!);
        }
        return data;
    }

    [Fact]
    public void EveryTemplateHasGoldens()
    {
        var templates = Directory.GetFiles(ChatFixtures.Dir("Templates"), "*.jinja").Select(Path.GetFileNameWithoutExtension).Order();
        var goldens = Directory.GetFiles(ChatFixtures.Dir("Goldens"), "*.json").Select(Path.GetFileNameWithoutExtension).Order();
        Assert.Equal(templates, goldens);
        Assert.True(templates.Count() >= 10);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersAsTheReference(string template, string caseName)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ChatFixtures.Dir("Goldens"), template + ".json")));
        var root = doc.RootElement;
        var c = root.GetProperty("cases").EnumerateArray().Single(x => x.GetProperty("name").GetString() == caseName);
        var messages = c.GetProperty("messages").EnumerateArray()
            .Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();
        var tools = c.GetProperty("tools");
        var context = new ChatTemplateContext
        {
            BosToken = root.GetProperty("bos_token").GetString()!,
            EosToken = root.GetProperty("eos_token").GetString()!,
            AddGenerationPrompt = c.GetProperty("add_generation_prompt").GetBoolean(),
            Tools = tools.ValueKind == JsonValueKind.Null ? null : tools.EnumerateArray().Select(t => (object?)t.Clone()).ToList(),
            Variables = c.GetProperty("extra").EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone()),
            Clock = ChatFixtures.FixedClock(DateTimeOffset.Parse(root.GetProperty("now").GetString()!, CultureInfo.InvariantCulture)),
        };
        var chat = ChatFixtures.Template(template);

        if (c.TryGetProperty("error", out var error))
        {
            var e = Assert.Throws<ChatTemplateException>(() => chat.Render(messages, context));
            Assert.Equal(ChatTemplateErrorKind.Raised, e.Kind);
            Assert.Equal(error.GetString(), e.Reason);
        }
        else
        {
            Assert.Equal(c.GetProperty("expected").GetString(), chat.Render(messages, context));
        }
    }
}
