using Kvq.Chat;
using Kvq.Model;
using Kvq.Serving;

namespace Kvq.Cli.Commands;

/// <summary>Where serve and chat get their chat prompt: --chat-template FILE, else the model's own template.</summary>
public static class ChatPromptSource
{
    /// <summary>The prompt, or null with the reason when there is none (no template, or the model's cannot be parsed:
    /// completions still work then). A --chat-template file that does not parse is an error.</summary>
    public static (IChatPrompt? Prompt, string? Missing) Load(string? templateFile, LoadedModel model)
    {
        if (templateFile != null)
        {
            try
            {
                return (TemplateChatPrompt.Parse(File.ReadAllText(templateFile), model.Tokenizer), null);
            }
            catch (ChatTemplateException e)
            {
                throw new CliException($"--chat-template {templateFile}: {e.Message}");
            }
        }
        try
        {
            return TemplateChatPrompt.For(model) is { } p ? (p, null) : (null, "the model has no chat template");
        }
        catch (ChatTemplateException e)
        {
            return (null, $"the model's chat template cannot be used ({e.Message})");
        }
    }
}
