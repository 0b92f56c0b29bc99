namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Per-layer bit widths with a fixed mean, chosen from calibration sensitivities: for each layer and width, the
/// Fisher-weighted squared quantization error that the layer's codebook leaves on the calibration data (the k-means
/// objective, KVQuant's estimate of the loss increase). Minimises the summed error subject to sum(bits) = mean x layers
/// by dynamic programming over (layer, bits spent), which is exact for a separable objective.
/// </summary>
/// <remarks>
/// Why: on books-19m the Fisher weight of layer 4's keys is ~20x any other layer's, and quantizing that one layer's keys
/// to 3 bits is what costs copy recall (docs/kvquant.md); moving bits there from insensitive layers keeps the mean.
/// </remarks>
public static class KvQuantBitAllocation
{
    /// <param name="sensitivity">sensitivity[layer][i]: error of the layer at <paramref name="widths"/>[i] bits (finite, >= 0).</param>
    /// <param name="widths">Allowed widths, ascending (e.g. 2, 3, 4).</param>
    /// <param name="meanBits">Target mean width; layers x meanBits must be a whole number of bits within reach.</param>
    /// <returns>Bits per layer. Among equal-cost choices the one closest to uniform (fewest bits moved) wins.</returns>
    public static int[] Allocate(IReadOnlyList<IReadOnlyList<double>> sensitivity, IReadOnlyList<int> widths, int meanBits)
    {
        int layers = sensitivity.Count;
        if (layers == 0) throw new ArgumentException("no layers to allocate bits to");
        if (widths.Count == 0) throw new ArgumentException("no bit widths to choose from");
        for (int i = 1; i < widths.Count; i++)
            if (widths[i] <= widths[i - 1]) throw new ArgumentException("bit widths must be strictly ascending");
        int lo = widths[0], hi = widths[^1];
        if (meanBits < lo || meanBits > hi)
            throw new ArgumentException($"mean of {meanBits} bits is outside the widths {lo}..{hi}");
        for (int l = 0; l < layers; l++)
        {
            if (sensitivity[l].Count != widths.Count)
                throw new ArgumentException($"layer {l}: {sensitivity[l].Count} sensitivities for {widths.Count} widths");
            foreach (double s in sensitivity[l])
                if (!double.IsFinite(s) || s < 0) throw new ArgumentException($"layer {l}: sensitivity {s} is not a finite value >= 0");
        }
        int total = meanBits * layers;
        int maxSpent = hi * layers;
        // best[l, s]: least (error, moved bits) over layers [0, l) spending s bits; choice[l, s]: width index for layer l-1.
        var err = new double[layers + 1, maxSpent + 1];
        var moved = new int[layers + 1, maxSpent + 1];
        var choice = new int[layers + 1, maxSpent + 1];
        for (int l = 0; l <= layers; l++)
            for (int s = 0; s <= maxSpent; s++) err[l, s] = double.PositiveInfinity;
        err[0, 0] = 0;
        for (int l = 0; l < layers; l++)
            for (int s = 0; s <= maxSpent; s++)
            {
                if (double.IsPositiveInfinity(err[l, s])) continue;
                for (int i = 0; i < widths.Count; i++)
                {
                    int s2 = s + widths[i];
                    if (s2 > maxSpent) continue;
                    double e = err[l, s] + sensitivity[l][i];
                    int m = moved[l, s] + Math.Abs(widths[i] - meanBits);
                    // Relative tolerance so that sums in a different order do not flip a tie.
                    bool better = e < err[l + 1, s2] * (1 - 1e-12) ||
                                  (e <= err[l + 1, s2] * (1 + 1e-12) && m < moved[l + 1, s2]);
                    if (!better) continue;
                    err[l + 1, s2] = e;
                    moved[l + 1, s2] = m;
                    choice[l + 1, s2] = i;
                }
            }
        var bits = new int[layers];
        int spent = total;
        for (int l = layers; l > 0; l--)
        {
            int i = choice[l, spent];
            bits[l - 1] = widths[i];
            spent -= widths[i];
        }
        return bits;
    }
}
