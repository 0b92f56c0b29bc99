using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Generation;

/// <summary>
/// The KV sequence a generation runs in, and what happens when it is full. A fixed window (<see cref="Over"/>) never
/// shifts: generation stops with <see cref="StopReason.ContextFull"/>. A shifting window (<see cref="Shifting"/>) does
/// llama.cpp's context shift: when the next token would not fit, it keeps the first <see cref="Keep"/> tokens (BOS and
/// the attention sinks StreamingLLM keeps) and the most recent half of the rest, and re-prefills them into a fresh
/// sequence, so a long generation goes on with the recent text in view at positions the model was trained on.
/// </summary>
public sealed class ContextWindow : IDisposable
{
    /// <summary>Tokens kept at the start by default: BOS and StreamingLLM's attention sinks.</summary>
    public const int DefaultKeep = 4;

    private readonly Func<IKvSequence>? _create;
    private readonly bool _owned;

    /// <summary>The sequence to run tokens in now (replaced by each shift).</summary>
    public IKvSequence Sequence { get; private set; }
    /// <summary>The most tokens the sequence holds; int.MaxValue for an unbounded window.</summary>
    public int Size { get; }
    public int Keep { get; }
    public int Shifts { get; private set; }
    public bool CanShift => _create != null;

    private ContextWindow(IKvSequence sequence, Func<IKvSequence>? create, int size, int keep, bool owned)
    {
        Sequence = sequence;
        _create = create;
        Size = size;
        Keep = keep;
        _owned = owned;
    }

    /// <summary>A window over a sequence the caller owns, of <paramref name="size"/> tokens (default: unbounded); it never shifts.</summary>
    public static ContextWindow Over(IKvSequence sequence, int size = int.MaxValue) => new(sequence, null, size, 0, owned: false);

    /// <summary>A window of <paramref name="size"/> tokens in sequences of <paramref name="model"/> with
    /// <paramref name="config"/>, shifting when full; it owns (and disposes) its sequences.</summary>
    /// <param name="first">The sequence to start in (a restored session), owned by the window from here; a new one when null.</param>
    public static ContextWindow Shifting(ILanguageModel model, KvCacheConfig config, int size, int keep = DefaultKeep, IKvSequence? first = null)
    {
        if (size < 2) throw new ArgumentOutOfRangeException(nameof(size), size, "a context window needs room for at least 2 tokens");
        if (first != null && first.Length > size)
            throw new ArgumentOutOfRangeException(nameof(first), first.Length, $"the sequence holds more tokens than the window of {size}");
        keep = Math.Clamp(keep, 0, size / 2);
        return new ContextWindow(first ?? model.CreateSequence(config, size), () => model.CreateSequence(config, size), size, keep, owned: true);
    }

    /// <summary>Whether <paramref name="tokens"/> more fit in the current sequence.</summary>
    public bool Fits(int tokens) => (long)Sequence.Length + tokens <= Size;

    /// <summary>Starts a fresh sequence and returns the tokens to run in it: the first <see cref="Keep"/> of
    /// <paramref name="history"/> and the most recent half of the room after them (llama.cpp's n_discard = half).</summary>
    public int[] Shift(IReadOnlyList<int> history)
    {
        if (_create == null) throw new InvalidOperationException("this context window does not shift");
        int keep = Math.Min(Keep, history.Count);
        int recent = Math.Min(history.Count - keep, Math.Max(1, (Size - keep) / 2));
        var tokens = new int[keep + recent];
        for (int i = 0; i < keep; i++) tokens[i] = history[i];
        for (int i = 0; i < recent; i++) tokens[keep + i] = history[history.Count - recent + i];
        var old = Sequence;
        Sequence = _create();
        (old as IDisposable)?.Dispose();
        Shifts++;
        return tokens;
    }

    public void Dispose()
    {
        if (_owned) (Sequence as IDisposable)?.Dispose();
    }
}
