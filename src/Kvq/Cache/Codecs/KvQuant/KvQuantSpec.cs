using System.Globalization;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>How keys are scaled: KVQuant's static per-channel scales, or per-token dynamic scales (the ablation).</summary>
public enum KeyScaling { PerChannel, PerToken }

/// <summary>
/// A parsed KVQuant spec: <c>nuqB[-F%][:modifier...]</c>, B in 2..4, F the dense-and-sparse outlier fraction
/// (absent = dense only). Modifiers select the paper's ablations:
/// <list type="bullet">
/// <item><c>uniform</c>: uniform levels on [-1, 1] (intB with KVQuant's scaling) instead of the calibrated codebook;</item>
/// <item><c>token</c>: keys scaled per token like values (keys only);</item>
/// <item><c>post</c>: keys quantized after RoPE with post-RoPE calibration (keys only);</item>
/// <item><c>qnorm</c> / <c>noqnorm</c>: decode with Q-Norm's mean/std-matched levels, or not (the default: on books-19m
/// Q-Norm did not help at 2 bits with Fisher weights and hurt without; see docs/kvquant.md);</item>
/// <item><c>slotsN</c>: N outlier slots per key token instead of <see cref="KeyOutlierSlots"/>;</item>
/// <item><c>mixed</c>: B is the mean width: each layer gets 2, 3 or 4 bits, chosen from the profile's calibration
/// sensitivities (<see cref="KvQuantBitAllocation"/>), keys and values separately.</item>
/// <item><c>wDDD..</c>: explicit per-layer widths, one digit 1..5 per layer (<c>nuq3-1%:w33335333</c>); a diagnostic
/// for per-layer ablations (one layer wider or narrower than the rest), not a size-matched format.</item>
/// </list>
/// Value codecs ignore the key-only modifiers, so one name can serve both sides ("--kv nuq3-1%:post").
/// </summary>
public sealed record KvQuantSpec(string Name, int Bits, double OutlierFraction, bool Uniform, KeyScaling KeyScaling,
    bool PostRope, bool QNorm, int? KeySlots = null, bool Mixed = false) : KvCodecSpec(Name)
{
    /// <summary><c>:clip</c>: per-token scales (values; keys under <c>:token</c>) chosen by the encoder to minimise the
    /// token's squared error with this codebook (a narrower range clips the extremes to the outer levels) instead of the
    /// non-outliers' min/max. Same bytes, same decoder.</summary>
    public bool Clip { get; init; }

    /// <summary><c>:fit</c>: per-token scales (values; keys under <c>:token</c>) refitted after the codes are chosen: the
    /// codes are the min/max scale's, and the stored 16-bit scale is the one (of the min/max scale and the codes around
    /// the least-squares zero and range for those codes) whose decoded non-outliers have the least squared error. Unlike
    /// <c>:clip</c> no value changes its code (nothing is clipped); the decoded token is the best affine map of its codes.
    /// Same bytes, same decoder.</summary>
    public bool Fit { get; init; }

    /// <summary><c>:marginM</c>: how far (in half-ranges of the rest, from the rest's middle) a per-token outlier
    /// candidate must lie to be kept exactly (<see cref="TokenOutliers.SplitBeyond"/>); default
    /// <see cref="ValueOutlierMargin"/>, the one calibration uses. A lower margin keeps more candidates exact (more
    /// sparse-row bytes, counted in the real bits).</summary>
    public float ValueMargin { get; init; } = ValueOutlierMargin;

    /// <summary>Whether the name gave <c>:marginM</c>. Without it the codecs split at the margin the profile's codebooks
    /// were fitted at (<see cref="KvQuantCalibrationSettings.ValueMargin"/>: 1.5 for every profile before it was
    /// recorded, so those specs code as before).</summary>
    public bool MarginGiven { get; init; }

    /// <summary><c>:mixedkv</c>: like <c>:mixed</c>, but the widths are chosen over keys and values together (bits may
    /// move from one side to the other; the mean over both sides stays B).</summary>
    public bool Joint { get; init; }

    /// <summary>Explicit per-layer widths (<c>:wDDD..</c>), or null.</summary>
    public int[]? LayerBits { get; init; }

    public const string Prefix = "nuq";

    /// <summary>Under <c>:mixed</c>: <see cref="Bits"/> is this layer's width, already chosen (not the mean).</summary>
    public bool Allocated { get; init; }

    public override KvCodec Create(KvCodecContext context) => KvQuantCodecs.Create(this, context);

    /// <summary>Under <c>:mixed</c>, each layer's width, chosen once per plan from the profile's sensitivities.</summary>
    public override KvCodecSpec[] ForLayers(KvCodecContext context, int layers)
    {
        var all = base.ForLayers(context, layers);
        if (!(Mixed || LayerBits != null) || Allocated) return all;
        var widths = KvQuantCodecs.LayerWidths(this, context);
        // Layers past the profile's keep the mean spec: creating their codecs reports the mismatch.
        for (int l = 0; l < Math.Min(layers, widths.Length); l++) all[l] = this with { Bits = widths[l], Allocated = true };
        return all;
    }

    public int Levels => 1 << Bits;
    public bool HasOutliers => OutlierFraction > 0;

    /// <summary>Parses a name of the family; null when the name is not a nuq spec at all; throws on a malformed one.</summary>
    public static KvQuantSpec? TryParse(string name)
    {
        if (!name.StartsWith(Prefix, StringComparison.Ordinal)) return null;
        var parts = name.Split(':');
        var head = parts[0];
        int dash = head.IndexOf('-');
        var bitsText = dash < 0 ? head[Prefix.Length..] : head[Prefix.Length..dash];
        if (!int.TryParse(bitsText, NumberStyles.None, CultureInfo.InvariantCulture, out int bits) || bits < 2 || bits > 4)
            throw new KvSpecException($"'{name}': expected nuq2, nuq3 or nuq4 (bits 2..4), optionally with -F% outliers");
        double fraction = 0;
        if (dash >= 0) fraction = ParseFraction(head[(dash + 1)..], name);
        bool uniform = false, post = false, mixed = false, clip = false, joint = false, fit = false;
        bool? qnorm = null;
        var scaling = KeyScaling.PerChannel;
        int? slots = null;
        int[]? layerBits = null;
        float margin = ValueOutlierMargin;
        bool marginGiven = false;
        for (int i = 1; i < parts.Length; i++)
        {
            if (parts[i].StartsWith("slots", StringComparison.Ordinal))
            {
                if (!int.TryParse(parts[i].AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out int sl) || sl < 1 || sl > 255)
                    throw new KvSpecException($"'{name}': '{parts[i]}' must be slotsN with N in 1..255 (key outlier slots per token)");
                if (dash < 0) throw new KvSpecException($"'{name}': outlier slots need an outlier fraction (e.g. nuq3-1%:{parts[i]})");
                slots = sl;
                continue;
            }
            if (parts[i].StartsWith("margin", StringComparison.Ordinal))
            {
                if (!float.TryParse(parts[i].AsSpan(6), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out margin)
                    || !(margin > 0 && margin <= 100))
                    throw new KvSpecException($"'{name}': '{parts[i]}' must be marginM with M in (0, 100] (half-ranges beyond which a value outlier candidate is kept exactly, e.g. margin1.2)");
                if (dash < 0) throw new KvSpecException($"'{name}': an outlier margin needs an outlier fraction (e.g. nuq2-1%:{parts[i]})");
                marginGiven = true;
                continue;
            }
            if (parts[i].Length > 1 && parts[i][0] == 'w' && parts[i].Skip(1).All(char.IsAsciiDigit))
            {
                layerBits = [.. parts[i].Skip(1).Select(ch => ch - '0')];
                if (layerBits.Any(b => b < 1 || b > 5))
                    throw new KvSpecException($"'{name}': '{parts[i]}' must give one width 1..5 per layer (e.g. w33343333)");
                continue;
            }
            switch (parts[i])
            {
                case "uniform": uniform = true; break;
                case "token": scaling = KeyScaling.PerToken; break;
                case "post": post = true; break;
                case "qnorm": qnorm = true; break;
                case "noqnorm": qnorm = false; break;
                case "mixed": mixed = true; break;
                case "mixedkv": mixed = true; joint = true; break;
                case "clip": clip = true; break;
                case "fit": fit = true; break;
                default:
                    throw new KvSpecException($"'{name}': unknown modifier '{parts[i]}' (known: uniform, token, post, qnorm, noqnorm, slotsN, marginM, mixed, mixedkv, clip, fit, wDDD..)");
            }
        }
        if (layerBits != null && (mixed || uniform))
            throw new KvSpecException($"'{name}': explicit layer widths (w...) exclude :mixed and :uniform");
        if (clip && fit) throw new KvSpecException($"'{name}': :clip and :fit both choose the per-token scale; give one");
        if (uniform && mixed) throw new KvSpecException($"'{name}': mixed widths are chosen from calibrated codebooks' errors; they do not apply to uniform levels");
        if (uniform && qnorm == true) throw new KvSpecException($"'{name}': Q-Norm adjusts calibrated codebooks; it does not apply to uniform levels");
        return new KvQuantSpec(name, bits, fraction, uniform, scaling, post, !uniform && (qnorm ?? false), slots, mixed)
        { LayerBits = layerBits, Clip = clip, Fit = fit, Joint = joint, ValueMargin = margin, MarginGiven = marginGiven };
    }

    /// <summary>"1%" -> 0.01. Fractions are given in percent, 0 &lt; F &lt; 50.</summary>
    public static double ParseFraction(string text, string context)
    {
        if (!text.EndsWith('%')
            || !double.TryParse(text[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double pct)
            || !(pct > 0 && pct < 50))
            throw new KvSpecException($"'{context}': outlier fraction '{text}' must be a percentage in (0%, 50%), e.g. 1% or 0.5%");
        return pct / 100;
    }

    public static string FormatFraction(double fraction) =>
        (fraction * 100).ToString("0.###", CultureInfo.InvariantCulture) + "%";

    /// <summary>Outlier slots per token for keys in the GPU's device layout (the CPU keeps every outlier in sparse rows
    /// beside the block): twice the expected count plus one; overflow is clamped there. 0 without outliers.</summary>
    public static int KeyOutlierSlots(double fraction, int headDim) =>
        fraction <= 0 ? 0 : (int)Math.Ceiling(2 * fraction * headDim - 1e-9) + 1;

    /// <summary>How far (in half-ranges of the rest, from the rest's middle) a per-token outlier candidate must lie to be
    /// kept exactly; nearer ones join the dense part (<see cref="TokenOutliers.SplitBeyond"/>).</summary>
    public const float ValueOutlierMargin = 1.5f;

    /// <summary>Outliers per tail for per-token (dynamic) scaling: the fraction split over both tails, at least one.</summary>
    public static int TokenOutliersPerTail(double fraction, int headDim) =>
        fraction <= 0 ? 0 : Math.Max(1, (int)Math.Ceiling(fraction / 2 * headDim - 1e-9));
}
