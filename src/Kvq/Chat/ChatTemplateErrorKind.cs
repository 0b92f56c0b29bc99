namespace Kvq.Chat;

public enum ChatTemplateErrorKind
{
    /// <summary>The template source is not valid (in the Jinja subset Kvq understands).</summary>
    Syntax,
    /// <summary>Rendering failed: an undefined value used where a value is needed, wrong types, a limit exceeded.</summary>
    Render,
    /// <summary>The template called raise_exception(message): it refuses these messages (for example roles that do not
    /// alternate); a caller's input error, not a template bug.</summary>
    Raised,
}
