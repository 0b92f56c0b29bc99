using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>
/// The host side of one batched step on the device (<see cref="CudaTransformer.ForwardBatch"/>): checks the segments
/// (contiguous, decode segments first, no sequence twice, within the step's room, ids in the vocabulary) and writes
/// into one int array, uploaded once per step: the token ids [0, n), each row's RoPE position [n, 2n) (its sequence's
/// length plus its offset in the segment) and the rows whose logits are wanted [2n, 2n + wanted) (each such segment's
/// last row, in segment order).
/// </summary>
internal static class BatchLayout
{
    /// <summary>Ints of staging a step of <paramref name="maxTokens"/> tokens needs.</summary>
    public static int StagingInts(int maxTokens) => 3 * maxTokens;

    /// <summary>Fills <paramref name="staging"/>; returns how many rows want logits.</summary>
    public static int Stage(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, int maxTokens, int vocab, Span<int> staging)
    {
        int n = tokens.Length;
        if (n == 0 || segments.Length == 0) throw new ArgumentException("a batch needs at least one token and one segment");
        if (n > maxTokens) throw new ArgumentException($"a batch of {n} tokens exceeds the model's {maxTokens}");
        if (staging.Length < 3 * n) throw new ArgumentException($"staging of {staging.Length} ints for a batch of {n} tokens", nameof(staging));
        int next = 0, wanted = 0;
        bool prefillSeen = false;
        for (int i = 0; i < segments.Length; i++)
        {
            var s = segments[i];
            if (s.Kv == null) throw new ArgumentException($"batch segment {i} has no sequence");
            if (s.Start != next || s.Count <= 0 || s.Count > n - next) throw new ArgumentException($"batch segment {i} does not continue at row {next}");
            if (s.Decode && prefillSeen) throw new ArgumentException($"batch segment {i}: decode segments must come before prompt chunks");
            for (int j = 0; j < i; j++)
                if (ReferenceEquals(segments[j].Kv, s.Kv)) throw new ArgumentException($"batch segments {j} and {i} are the same sequence");
            prefillSeen |= !s.Decode;
            long pos0 = s.Kv.Length;
            if (pos0 + s.Count > int.MaxValue) throw new ArgumentException($"batch segment {i}: positions past {int.MaxValue}");
            for (int t = 0; t < s.Count; t++)
            {
                int id = tokens[next + t];
                if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} is outside the vocabulary (0..{vocab - 1})");
                staging[next + t] = id;
                staging[n + next + t] = (int)(pos0 + t);
            }
            next += s.Count;
            if (s.Logits) staging[2 * n + wanted++] = next - 1;
        }
        if (next != n) throw new ArgumentException($"batch segments cover {next} of {n} tokens");
        return wanted;
    }
}
