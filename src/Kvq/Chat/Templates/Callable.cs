namespace Kvq.Chat.Templates;

/// <summary>Something a template can call: a global function or a macro.</summary>
internal abstract class Callable(string name)
{
    public string Name { get; } = name;
    public abstract object? Invoke(CallArgs args);
}

/// <summary>A global function written in C# (range, namespace, raise_exception, ...).</summary>
internal sealed class BuiltinFunction(string name, Func<CallArgs, object?> body) : Callable(name)
{
    public override object? Invoke(CallArgs args) => body(args);
}
