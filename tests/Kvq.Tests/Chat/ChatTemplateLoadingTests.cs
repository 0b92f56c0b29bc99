using System.Text.Json.Nodes;
using Kvq.Chat;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Model;
using Kvq.Tests.Formats.Safetensors;
using Kvq.Tests.Model;
using Kvq.Tests.Tokenizers.HuggingFace;

namespace Kvq.Tests.Chat;

/// <summary>A model's chat template reaches LoadedModel from GGUF metadata (tokenizer.chat_template) and from a
/// Hugging Face folder (chat_template.jinja, tokenizer_config.json).</summary>
public sealed class ChatTemplateLoadingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-chat-load-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void GgufWithATemplateLoadsWithIt()
    {
        string chatml = ChatFixtures.TemplateSource("chatml");
        var path = TinyModelWriter.Write(new TinyModelSpec(), _dir, w => w.Add(ChatTemplates.GgufKey, chatml));
        using var model = ModelLoader.Load(path);
        Assert.Equal(chatml, model.ChatTemplateSource);
        var template = Assert.IsType<ChatTemplate>(model.ChatTemplate);
        var context = model.ChatContext();
        Assert.Equal(("<s>", "</s>"), (context.BosToken, context.EosToken)); // stories260K's vocabulary
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", template.Render([new("user", "Hi")], context));
    }

    [Fact]
    public void GgufWithoutATemplateGivesNull()
    {
        using var model = ModelLoader.Load(Fixtures.BooksGguf);
        Assert.Null(model.ChatTemplateSource);
        Assert.Null(model.ChatTemplate);
    }

    [Fact]
    public void ATemplateThatDoesNotParseFailsOnlyWhenUsed()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(), _dir, w => w.Add(ChatTemplates.GgufKey, "{% if %}"));
        using var model = ModelLoader.Load(path); // generation does not need the template: loading still works
        var e = Assert.Throws<ChatTemplateException>(() => model.ChatTemplate);
        Assert.Equal(ChatTemplateErrorKind.Syntax, e.Kind);
    }

    [Fact]
    public void ANonStringTemplateKeyIsAFormatError()
    {
        var path = TinyModelWriter.Write(new TinyModelSpec(), _dir, w => w.Add(ChatTemplates.GgufKey, 5u));
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(path));
        Assert.Contains(ChatTemplates.GgufKey, e.Message);
    }

    [Fact]
    public void HfFolderLoadsTheTokenizerConfigTemplate()
    {
        using (var g = GgufFile.Open(Fixtures.StoriesGguf)) SafetensorsGgufEquivalenceTests.WriteStoriesAsHf(g, _dir);
        HfTokenizerJson.Write(Path.Combine(_dir, "tokenizer.json"), HfTokenizerJson.SentencePieceFromGguf(Fixtures.StoriesGguf));
        var config = HfTokenizerJson.SentencePieceConfig();
        config["chat_template"] = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}";
        HfTokenizerJson.Write(Path.Combine(_dir, "tokenizer_config.json"), config);
        using var model = ModelLoader.Load(_dir);
        Assert.Equal("<s>[user] Hi</s>", model.ChatTemplate!.Render([new("user", "Hi")], model.ChatContext()));
    }

    private string WriteConfig(JsonNode? chatTemplate)
    {
        var config = new JsonObject { ["bos_token"] = "<s>" };
        if (chatTemplate != null) config["chat_template"] = chatTemplate;
        string path = Path.Combine(_dir, "tokenizer_config.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    [Fact]
    public void HfTemplateListTakesTheDefault()
    {
        string config = WriteConfig(new JsonArray(
            new JsonObject { ["name"] = "tool_use", ["template"] = "tools" },
            new JsonObject { ["name"] = "default", ["template"] = "plain" }));
        Assert.Equal("plain", ChatTemplates.FromHfFolder(_dir, config));
    }

    [Fact]
    public void HfTemplateListWithoutDefaultIsAFormatError()
    {
        string config = WriteConfig(new JsonArray(new JsonObject { ["name"] = "tool_use", ["template"] = "tools" }));
        var e = Assert.Throws<ModelFormatException>(() => ChatTemplates.FromHfFolder(_dir, config));
        Assert.Contains("expected a template named 'default', found 'tool_use'", e.Message);
        Assert.Throws<ModelFormatException>(() => ChatTemplates.FromHfFolder(_dir, WriteConfig(42)));
    }

    [Fact]
    public void HfChatTemplateFileWinsAndNoTemplateGivesNull()
    {
        string config = WriteConfig(null);
        Assert.Null(ChatTemplates.FromHfFolder(_dir, config));
        Assert.Null(ChatTemplates.FromHfFolder(_dir, null));
        Assert.Equal("from config", ChatTemplates.FromHfFolder(_dir, WriteConfig("from config")));
        File.WriteAllText(Path.Combine(_dir, ChatTemplates.HfTemplateFileName), "from file");
        Assert.Equal("from file", ChatTemplates.FromHfFolder(_dir, config));
    }

    [Fact]
    public void AnOverrideFileParsesLikeAModelTemplate()
    {
        string file = Path.Combine(_dir, "override.jinja");
        File.WriteAllText(file, ChatFixtures.TemplateSource("phi-3.5-mini"));
        var template = ChatTemplate.Parse(File.ReadAllText(file));
        Assert.Equal("<|user|>\nHi<|end|>\n<|assistant|>\n", template.Render([new("user", "Hi")], new ChatTemplateContext()));
    }
}
