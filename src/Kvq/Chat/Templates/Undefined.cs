namespace Kvq.Chat.Templates;

/// <summary>
/// Jinja's default Undefined: what a missing variable, key, attribute or index evaluates to. It is falsy, renders as
/// "", iterates as empty and has length 0; "is defined" is false. Anything that needs its value (arithmetic,
/// attribute access, calls, comparisons) is an error that quotes <see cref="Hint"/>.
/// </summary>
internal sealed class Undefined(string hint)
{
    public static readonly Undefined Plain = new("value is undefined");
    public string Hint { get; } = hint;
}
