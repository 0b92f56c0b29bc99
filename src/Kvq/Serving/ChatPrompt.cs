using System.Text.Json;
using Kvq.Formats.Gguf;
using Kvq.Tokenizers;

namespace Kvq.Serving;

/// <summary>One message of a conversation as the chat front ends (the server, the IChatClient, kvq chat) pass it on.</summary>
/// <param name="Role">"system", "user", "assistant" or "tool" (the template decides what it accepts).</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// The one seam between chat front ends and chat templates: a conversation in, the prompt text the model was trained
/// on out (ending with the assistant's turn header, ready for the answer).
/// </summary>
public interface IChatPrompt
{
    /// <exception cref="ChatPromptException">the template refused the conversation or failed to render it.</exception>
    string Render(IReadOnlyList<ChatTurn> messages);
}

/// <summary>A conversation a chat template cannot turn into a prompt. <see cref="Refused"/>: the template itself
/// refused these messages (raise_exception, e.g. roles that do not alternate), the caller's mistake; otherwise the
/// template failed.</summary>
public sealed class ChatPromptException(string message, bool refused, Exception? inner = null) : Exception(message, inner)
{
    public bool Refused { get; } = refused;
}

/// <summary>Finding a model's chat template, and turning rendered prompts into tokens.</summary>
public static class ChatPrompts
{
    /// <summary>The chat template a model ships: GGUF metadata <c>tokenizer.chat_template</c>, or
    /// <c>chat_template</c> in a Hugging Face folder's tokenizer_config.json (a string, or a list of named templates of
    /// which "default" is taken); null when it has none (llama2.c checkpoints never do).</summary>
    public static string? FindTemplateSource(string modelPath)
    {
        if (Directory.Exists(modelPath))
        {
            var config = Path.Combine(modelPath, "tokenizer_config.json");
            if (!File.Exists(config)) return null;
            using var doc = JsonDocument.Parse(File.ReadAllBytes(config));
            if (!doc.RootElement.TryGetProperty("chat_template", out var t)) return null;
            if (t.ValueKind == JsonValueKind.String) return t.GetString();
            if (t.ValueKind == JsonValueKind.Array)
                foreach (var named in t.EnumerateArray())
                    if (named.TryGetProperty("name", out var n) && n.GetString() == "default" && named.TryGetProperty("template", out var s))
                        return s.GetString();
            return null;
        }
        if (!File.Exists(modelPath)) return null;
        using (var fs = File.OpenRead(modelPath))
        {
            Span<byte> magic = stackalloc byte[4];
            if (fs.Read(magic) != 4 || BitConverter.ToUInt32(magic) != GgufFile.Magic) return null;
        }
        using var gguf = GgufFile.Open(modelPath);
        return gguf.TryGetString("tokenizer.chat_template");
    }

    /// <summary>Prompt tokens of a rendered conversation. The template writes special tokens as text (its turn
    /// markers, often BOS), so they are parsed as special tokens; BOS is put in front only when the model wants one and
    /// the template did not write it.</summary>
    public static int[] Encode(ITokenizer tokenizer, string prompt)
    {
        string bos = tokenizer.BosId >= 0 ? tokenizer.Piece(tokenizer.BosId) : "";
        bool bosWritten = bos.Length > 0 && prompt.StartsWith(bos, StringComparison.Ordinal);
        return tokenizer.Encode(prompt, addBos: tokenizer.AddBos && !bosWritten, parseSpecial: true);
    }
}
