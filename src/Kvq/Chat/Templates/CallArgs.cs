namespace Kvq.Chat.Templates;

/// <summary>Evaluated arguments of a call, filter or test, with Python-style lookup by position or keyword.</summary>
internal sealed class CallArgs(List<object?> positional, Dictionary<string, object?> keywords, SourcePos at)
{
    public static CallArgs Empty(SourcePos at) => new([], new(StringComparer.Ordinal), at);

    public List<object?> Positional { get; } = positional;
    public Dictionary<string, object?> Keywords { get; } = keywords;
    public SourcePos At { get; } = at;

    public int Count => Positional.Count + Keywords.Count;

    public bool Has(int index, string name) => index < Positional.Count || Keywords.ContainsKey(name);

    /// <summary>The argument at <paramref name="index"/> or named <paramref name="name"/>, else <paramref name="fallback"/>.</summary>
    public object? Get(int index, string name, object? fallback = null) =>
        index < Positional.Count ? Positional[index] : Keywords.TryGetValue(name, out var v) ? v : fallback;

    public object? Required(int index, string name, string function) =>
        Has(index, name) ? Get(index, name) : throw At.Render($"{function}() is missing its argument '{name}'");

    /// <summary>Refuses arguments a function does not take (a typo would otherwise be ignored without a word).</summary>
    public CallArgs Check(string function, params string[] names)
    {
        if (Positional.Count > names.Length)
            throw At.Render($"{function}() takes at most {names.Length} argument{(names.Length == 1 ? "" : "s")}, got {Positional.Count}");
        foreach (var key in Keywords.Keys)
        {
            int i = Array.IndexOf(names, key);
            if (i < 0) throw At.Render($"{function}() got an unexpected keyword argument '{key}'");
            if (i < Positional.Count) throw At.Render($"{function}() got multiple values for argument '{key}'");
        }
        return this;
    }
}
