namespace Kvq.Calibration;

/// <summary>
/// Calibration windows: the text is cut into consecutive slots of length-1 tokens and <c>samples</c> distinct slots
/// are drawn with a seeded shuffle (so windows never overlap and the same seed gives the same windows); each window
/// is BOS followed by its slot's tokens.
/// </summary>
public static class CalibrationWindows
{
    public static int[][] Choose(ReadOnlySpan<int> textTokens, int samples, int length, int bos, ulong seed)
    {
        if (samples < 1) throw new ArgumentException($"--samples {samples}: need at least one calibration window");
        if (length < 2) throw new ArgumentException($"--length {length}: a window needs at least 2 tokens");
        if (bos < 0) throw new ArgumentException("the model has no BOS token to start calibration windows with");
        int slots = textTokens.Length / (length - 1);
        if (slots < samples)
            throw new ArgumentException($"the calibration text has {textTokens.Length} tokens: {slots} windows of {length}, " +
                                        $"fewer than the {samples} asked for");
        var order = new int[slots];
        for (int i = 0; i < slots; i++) order[i] = i;
        var rng = new Random(SeedOf(seed));
        for (int i = 0; i < samples; i++)
        {
            int j = i + rng.Next(slots - i);
            (order[i], order[j]) = (order[j], order[i]);
        }
        var chosen = order[..samples];
        Array.Sort(chosen);
        var windows = new int[samples][];
        for (int s = 0; s < samples; s++)
        {
            var w = new int[length];
            w[0] = bos;
            textTokens.Slice(chosen[s] * (length - 1), length - 1).CopyTo(w.AsSpan(1));
            windows[s] = w;
        }
        return windows;
    }

    /// <summary>A 31-bit seed for <see cref="Random"/> from a 64-bit one (and a salt), stable across runs.</summary>
    public static int SeedOf(ulong seed, ulong salt = 0)
    {
        ulong z = seed + 0x9E3779B97F4A7C15UL * (salt + 1);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (int)(z & 0x7FFFFFFF);
    }
}
