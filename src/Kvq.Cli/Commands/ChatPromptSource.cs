using Kvq.Serving;
using Kvq.Tokenizers;

namespace Kvq.Cli.Commands;

/// <summary>Where serve and chat get their chat prompt: --chat-template FILE, else the model's own template.</summary>
public static class ChatPromptSource
{
    /// <summary>Null when no template is given and the model has none (completions still work; chat says why not).</summary>
    public static IChatPrompt? Load(string? templateFile, string modelPath, ITokenizer tokenizer)
    {
        var source = templateFile != null ? File.ReadAllText(templateFile) : ChatPrompts.FindTemplateSource(modelPath);
        if (source == null) return null;
        throw new CliException("chat templates need the Kvq.Chat renderer, which this build does not have yet");
    }
}
