namespace Kvq.Cuda.Model;

/// <summary>
/// What changes from one decode token to the next for a step replayed from a CUDA graph (<see cref="DecodeGraph"/>):
/// packed as ints into a small device buffer by one copy before each replay; the captured kernels read it there
/// (model.cu STEP_KPOS, STEP_SLOT, STEP_COUNT: the indices below must stay equal to those).
/// </summary>
/// <param name="Token">The token id the step embeds.</param>
/// <param name="QueryPosition">The position the query is rotated at (the sequence's length before the step).</param>
/// <param name="KeyPosition">The position the appended key is rotated at (the cache's first position plus its slot).</param>
/// <param name="Slot">The slot the token's key and value go to.</param>
/// <param name="Count">The tokens attention sees (slot + 1).</param>
internal readonly record struct DecodeStep(int Token, int QueryPosition, int KeyPosition, int Slot, int Count)
{
    public const int TokenIndex = 0, QueryPositionIndex = 1, KeyPositionIndex = 2, SlotIndex = 3, CountIndex = 4;

    /// <summary>Ints of the device buffer (a little room past the fields).</summary>
    public const int Ints = 8;

    /// <summary>The step that appends <paramref name="token"/> to a sequence of <paramref name="length"/> tokens whose
    /// cache starts at <paramref name="firstPosition"/>: the values the direct path passes as launch arguments.</summary>
    public static DecodeStep For(int token, long length, long firstPosition)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(token);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfNegative(firstPosition);
        if (length + 1 > int.MaxValue || firstPosition + length > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length), length,
                $"a decode step from a CUDA graph reads positions as 32-bit ints: {firstPosition} + {length} is too far");
        return new DecodeStep(token, (int)length, (int)(firstPosition + length), (int)length, (int)length + 1);
    }

    /// <summary>Writes the fields at their indices into <paramref name="ints"/> (at least <see cref="Ints"/> long); the rest is zeroed.</summary>
    public void Pack(Span<int> ints)
    {
        if (ints.Length < Ints) throw new ArgumentException($"a decode step packs into {Ints} ints, not {ints.Length}", nameof(ints));
        ints[..Ints].Clear();
        ints[TokenIndex] = Token;
        ints[QueryPositionIndex] = QueryPosition;
        ints[KeyPositionIndex] = KeyPosition;
        ints[SlotIndex] = Slot;
        ints[CountIndex] = Count;
    }

    /// <summary>The device address of field <paramref name="index"/> of a step packed at <paramref name="buffer"/>.</summary>
    public static ulong Field(ulong buffer, int index) => buffer + 4UL * (ulong)index;
}
