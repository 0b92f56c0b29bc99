namespace Kvq.Cache.Attention;

/// <summary>Softmax states of block ranges under split-K: running max, sum and unnormalised accumulator per query row
/// and state. One per calling thread, grown on demand and reused (decode would otherwise allocate per token and layer);
/// every state a call reads, it wrote first.</summary>
internal sealed class PartialStates
{
    [ThreadStatic] private static PartialStates? _cached;

    public int Rows { get; private set; }
    public float[] Max { get; private set; } = [];
    public float[] Sum { get; private set; } = [];
    public float[] Acc { get; private set; } = [];

    /// <summary>The calling thread's states, sized for <paramref name="states"/> x <paramref name="rows"/> rows.</summary>
    public static PartialStates For(int states, int rows, int headDim)
    {
        var p = _cached ??= new PartialStates();
        p.Rows = rows;
        if (p.Max.Length < states * rows)
        {
            p.Max = new float[states * rows];
            p.Sum = new float[states * rows];
        }
        if (p.Acc.Length < states * rows * headDim) p.Acc = new float[states * rows * headDim];
        return p;
    }
}
