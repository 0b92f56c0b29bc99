namespace Kvq.Chat.Templates;

/// <summary>The "loop" variable inside a for loop.</summary>
internal sealed class LoopContext(IReadOnlyList<object?> items, int index)
{
    public object? Attribute(string name) => name switch
    {
        "index" => (object)((long)index + 1),
        "index0" => (long)index,
        "revindex" => (long)(items.Count - index),
        "revindex0" => (long)(items.Count - index - 1),
        "first" => index == 0,
        "last" => index == items.Count - 1,
        "length" => (long)items.Count,
        "previtem" => index > 0 ? items[index - 1] : new Undefined("there is no previous item"),
        "nextitem" => index < items.Count - 1 ? items[index + 1] : new Undefined("there is no next item"),
        "depth" => 1L,
        "depth0" => 0L,
        "cycle" => new BoundMethod(this, "cycle"),
        _ => new Undefined($"'loop' has no attribute '{name}'"),
    };

    /// <summary>loop.cycle(a, b, ...): the argument at this iteration's index, round robin.</summary>
    public object? Cycle(IReadOnlyList<object?> values) => values.Count == 0 ? null : values[index % values.Count];
}
