using Kvq.Chat.Templates;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat;

/// <summary>
/// A model's chat template: the Jinja program that turns a list of messages into the prompt text the model was
/// trained on.
/// </summary>
/// <remarks>
/// Hand-written because no maintained Jinja engine exists for .NET (the ports found are abandoned or rely on
/// reflection, which this trimmed, NativeAOT-compatible library cannot use). The interpreter in
/// <see cref="Templates"/> covers the subset Hugging Face chat templates use: for (loop variables,
/// else, inline if, unpacking), if/elif/else, set (namespaces, blocks), macro/call, filter blocks, whitespace control,
/// Python's string and dict methods, Jinja's filters and tests, raise_exception, range, namespace and strftime_now.
/// It renders as transformers does (trim_blocks and lstrip_blocks on, tojson without HTML escaping); the tests
/// compare it with @huggingface/jinja on published templates (tests/Kvq.Tests/Chat).
/// </remarks>
public sealed class ChatTemplate
{
    private readonly List<Stmt> _body;

    private ChatTemplate(string source, List<Stmt> body)
    {
        Source = source;
        _body = body;
    }

    public string Source { get; }

    /// <exception cref="ChatTemplateException">the source is not a template Kvq can render (Kind Syntax, with the
    /// line and column).</exception>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(source, TemplateParser.Parse(source));
    }

    /// <summary>The prompt for <paramref name="messages"/>.</summary>
    /// <exception cref="ChatTemplateException">the template refused the messages (Kind Raised, Reason is its message)
    /// or failed (Kind Render).</exception>
    /// <exception cref="ArgumentException">a tool or variable value of a type templates cannot see.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, ChatTemplateContext context)
    {
        ArgumentNullException.ThrowIfNull(messages);
        ArgumentNullException.ThrowIfNull(context);
        var globals = new Scope(null);
        Globals.AddTo(globals, context.Clock);
        var scope = new Scope(globals);
        var list = new List<object?>(messages.Count);
        foreach (var m in messages) list.Add(new Dict { ["role"] = m.Role, ["content"] = m.Content });
        scope.Set("messages", list);
        scope.Set("bos_token", context.BosToken);
        scope.Set("eos_token", context.EosToken);
        scope.Set("add_generation_prompt", context.AddGenerationPrompt);
        scope.Set("tools", context.Tools == null ? null : TemplateValues.From(context.Tools));
        scope.Set("documents", null);
        foreach (var (name, value) in context.Variables ?? new Dictionary<string, object?>())
            scope.Set(name, TemplateValues.From(value));
        return new TemplateRenderer(context.MaxOutputChars).Render(_body, scope);
    }
}
