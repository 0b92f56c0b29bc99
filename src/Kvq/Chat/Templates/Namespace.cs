namespace Kvq.Chat.Templates;

/// <summary>namespace(...): the one mutable object a template has, so that {% set ns.x = ... %} inside a loop is
/// seen after it (plain set inside a loop is local to the loop body).</summary>
internal sealed class Namespace
{
    public Dictionary<string, object?> Attributes { get; } = new(StringComparer.Ordinal);
}
