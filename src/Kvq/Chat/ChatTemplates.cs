using System.Text.Json;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Chat;

/// <summary>Where a model keeps its chat template: a GGUF's tokenizer.chat_template, a Hugging Face folder's
/// chat_template.jinja or tokenizer_config.json "chat_template". The source text only: parsing waits until someone
/// chats, so that a template Kvq cannot parse never stops plain generation.</summary>
public static class ChatTemplates
{
    public const string GgufKey = "tokenizer.chat_template";
    public const string HfTemplateFileName = "chat_template.jinja";

    /// <summary>The template source, or null when the file has none.</summary>
    /// <exception cref="ModelFormatException">the key holds something other than a string.</exception>
    public static string? FromGguf(GgufFile gguf)
    {
        if (!gguf.Metadata.TryGetValue(GgufKey, out var value)) return null;
        return value as string ?? throw new ModelFormatException(gguf.Path, $"metadata '{GgufKey}'", gguf.KeyOffset(GgufKey),
            $"expected a string (the Jinja chat template), found {value.GetType().Name}");
    }

    /// <summary>
    /// The template source of a Hugging Face model folder, or null: chat_template.jinja (where recent transformers
    /// saves it) if present, else tokenizer_config.json's "chat_template", either a string or a list of
    /// {"name", "template"} of which the one named "default" is taken.
    /// </summary>
    /// <exception cref="ModelFormatException">tokenizer_config.json's chat_template has another shape, or a list
    /// without "default".</exception>
    public static string? FromHfFolder(string directory, string? tokenizerConfigPath)
    {
        string file = Path.Combine(directory, HfTemplateFileName);
        if (File.Exists(file)) return File.ReadAllText(file);
        if (tokenizerConfigPath == null || !File.Exists(tokenizerConfigPath)) return null;
        using var config = HfJsonFile.Read(tokenizerConfigPath);
        var node = config.Root.Optional("chat_template");
        if (node == null) return null;
        if (node.Kind == JsonValueKind.String) return node.String();
        if (node.Kind != JsonValueKind.Array) throw node.Expected("a template string or a list of {\"name\", \"template\"}");
        var names = new List<string>();
        foreach (var item in node.Items())
        {
            string name = item.Required("name", "the template's name").String();
            if (name == "default") return item.Required("template", "the template's text").String();
            names.Add(name);
        }
        throw node.Error($"expected a template named 'default', found {(names.Count == 0 ? "none" : string.Join(", ", names.Select(n => $"'{n}'")))}");
    }
}
