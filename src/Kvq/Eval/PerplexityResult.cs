using System.Text.Json.Serialization;
using Kvq.Cache.Codecs;

namespace Kvq.Eval;

/// <summary>One row of `kvq eval ppl`: field names are read by other tools (kv, ppl, tokens, bits_per_element, kv_bytes_per_token).</summary>
/// <param name="Stride">0 for non-overlapping windows; else the sliding windows' step (only the last Stride positions scored).</param>
/// <param name="KvQuant">For calibrated (KVQuant) caches: KVQuant's own bit accounting and what the codecs did with outliers.</param>
public sealed record PerplexityResult(string Kv, double Ppl, long Tokens, int Windows, int Ctx, double BitsPerElement,
    double KvBytesPerToken, double Seconds, int Stride = 0, KvQuantStats? KvQuant = null)
{
    /// <summary>The standard error of <see cref="Ppl"/> as llama-perplexity reports it ("PPL = x +/- y"): the standard
    /// error of the mean per-token NLL, propagated through exp (JSON: ppl_error).</summary>
    public double PplError { get; init; }

    /// <summary>Outliers the evaluated sequences' codecs stored exactly, summed over windows (keys; zero for a format
    /// without sparse rows or a sequence that does not count them). Read into <see cref="KvQuant"/>.</summary>
    [JsonIgnore] public KvOutlierCounts KeyOutliers { get; init; }
    /// <summary>As <see cref="KeyOutliers"/>, for values.</summary>
    [JsonIgnore] public KvOutlierCounts ValueOutliers { get; init; }
}

/// <param name="BitsPerElement">KVQuant's accounting (codes + amortised scales + 32 bits per outlier + pointer), mean
/// over keys, values and layers; the stored bits for a side that is not a nuq format.</param>
/// <param name="KeyOutlierRate">Key outliers stored exactly, per key element (likewise values).</param>
public sealed record KvQuantStats(double BitsPerElement, double KeyOutlierRate, double ValueOutlierRate);
