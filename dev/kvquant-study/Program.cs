using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Model;
using Kvq.Text;

// KVQuant codebook study (issue 17). Collects Fisher-weighted calibration activations exactly as `kvq calibrate` does,
// then reports, per layer and width, the calibration objective (sum of Fisher x scale^2 x (u - Q(u))^2 over the
// non-outlier values: the profile's "sensitivity") for:
//   layer   one codebook per layer (what the profile stores; restarts 3, 300 iterations, as KvQuantFitter)
//   head    one codebook per (layer, KV head)  (try (a) of the brief: per-head value codebooks)
//   long    one per layer, 24 restarts and 5000 iterations (try (d): better init / more iterations)
// for values (per token, 1% outliers: k = 1 per tail, 1.5 half-range margin, 16-bit scale, as NuqTokenCodec) and for
// pre-RoPE keys (per channel, 1% percentile thresholds, as NuqChannelCodec).
// Usage: KvqStudy MODEL TEXT [SAMPLES=4] [LENGTH=2048] [THREADS=2]
// Usage 2: KvqStudy merge KEYS.kvqp VALUES.kvqp OUT.kvqp -- a profile with the keys' scales and codebooks of the first
// and the value codebooks of the second (e.g. plain keys, values from a `--rotate` profile: values-only rotation as
// `nuq3-1%/nuq3-1%:rot`, or the reverse). The text name ends with the rotation marker when either side is rotated.
if (args.Length == 4 && args[0] == "merge")
{
    var kp = KvQuantProfile.Load(args[1]);
    var vp = KvQuantProfile.Load(args[2], kp.ModelFingerprint);
    var cals = new List<KvQuantCalibration>();
    foreach (var kc in kp.Calibrations)
    {
        var vc = vp.For(kc.OutlierFraction, "merge");
        var books = kc.Codebooks.Where(b => b.Stream != KvQuantStream.Value).Concat(vc.Codebooks.Where(b => b.Stream == KvQuantStream.Value));
        cals.Add(new KvQuantCalibration(kc.OutlierFraction, kc.KeysPreRope, kc.KeysPostRope, books));
    }
    // The rotation marker goes last when either side was fitted rotated, so that side's `:rot` is accepted (the
    // codecs check only the marker; which side is rotated is the user's to match, as the spec `K/V` names it).
    string marker = Kvq.Cache.Codecs.Rotation.RotatedSpec.ProfileTextMarker;
    string Plain(string t) => t.EndsWith(marker, StringComparison.Ordinal) ? t[..^marker.Length] + " (rotated)" : t;
    bool anyRotated = kp.Settings.Text.EndsWith(marker, StringComparison.Ordinal) || vp.Settings.Text.EndsWith(marker, StringComparison.Ordinal);
    var st = kp.Settings with { Text = "keys " + Plain(kp.Settings.Text) + ", values " + Plain(vp.Settings.Text) + (anyRotated ? marker : "") };
    new KvQuantProfile(kp.ModelFingerprint, st, kp.Layers, kp.KvHeads, kp.HeadDim, cals).Save(args[3]);
    Console.WriteLine($"wrote {args[3]}: {st.Text}");
    return 0;
}
// Usage 4: KvqStudy mergelayers PLAIN.kvqp ROTATED.kvqp OUT.kvqp KEYLAYERS VALUELAYERS -- a per-layer rotation
// choice (idea (a)): the listed layers' key scales and codebooks (KEYLAYERS, '.'-separated, or '-' for none) and value
// codebooks come from the `--rotate` profile, every other layer's from the plain one. Use with `FORMAT:rot@KEYLAYERS` /
// `FORMAT:rot@VALUELAYERS` (e.g. `nuq3-1%:mixed:rot@4/nuq3-1%:mixed`). Both profiles need this build's exact rotated
// Fisher weights for the merged sensitivities (`:mixed`) to be comparable across layers.
if (args.Length == 6 && args[0] == "mergelayers")
{
    var pp = KvQuantProfile.Load(args[1]);
    var rp = KvQuantProfile.Load(args[2], pp.ModelFingerprint);
    HashSet<int> Layers(string t) => t == "-" ? [] : [.. t.Split('.').Select(int.Parse)];
    var keyLayers = Layers(args[4]);
    var valueLayers = Layers(args[5]);
    // The same merge `kvq calibrate --rotate auto` makes, with the layers given instead of chosen.
    var cals = pp.Calibrations.Select(pc => KvQuantRotationChoice.Merge(pc, rp.For(pc.OutlierFraction, "mergelayers"), keyLayers, valueLayers)).ToList();
    string mk = Kvq.Cache.Codecs.Rotation.RotatedSpec.ProfileTextMarker;
    var st = pp.Settings with { Text = $"keys rotated in layers {args[4]}, values in {args[5]}" + mk };
    new KvQuantProfile(pp.ModelFingerprint, st, pp.Layers, pp.KvHeads, pp.HeadDim, cals).Save(args[3]);
    Console.WriteLine($"wrote {args[3]}: {st.Text}");
    return 0;
}
// Usage 3: KvqStudy compare PLAIN.kvqp ROTATED.kvqp -- per side, layer and width, the codebooks' sensitivities (the
// Fisher-weighted squared error, KVQuant's loss estimate) of a plain and of a `--rotate` profile at 1% outliers, and
// their ratio: with Fisher weights of the rotated coordinates (this build's `--rotate`) the two estimate the same loss,
// so a ratio below 1 says rotating that layer's side is predicted to help (idea (a): a per-layer rotation choice).
if (args.Length == 3 && args[0] == "compare")
{
    var pp = KvQuantProfile.Load(args[1]);
    var rp = KvQuantProfile.Load(args[2], pp.ModelFingerprint);
    var pc = pp.For(0.01, "compare");
    var rc = rp.For(0.01, "compare");
    Console.WriteLine($"# {pp.Settings.Text} vs {rp.Settings.Text}, 1% outliers: rotated / plain sensitivity");
    Console.WriteLine("| side | bits | " + string.Join(" | ", Enumerable.Range(0, pp.Layers).Select(l => $"L{l}")) + " | sum |");
    Console.WriteLine("|---|---:|" + string.Concat(Enumerable.Repeat("---:|", pp.Layers + 1)));
    foreach (var stream in new[] { KvQuantStream.KeyChannelPreRope, KvQuantStream.Value })
        foreach (int bits in new[] { 1, 2, 3, 4 })
        {
            double ps = 0, rs = 0;
            var cells = new List<string>();
            for (int l = 0; l < pp.Layers; l++)
            {
                double a = pc.Codebook(stream, l, bits)?.Sensitivity ?? double.NaN, b = rc.Codebook(stream, l, bits)?.Sensitivity ?? double.NaN;
                ps += a;
                rs += b;
                cells.Add($"{b / a:F2}");
            }
            Console.WriteLine($"| {(stream == KvQuantStream.Value ? "values" : "keys")} | {bits} | {string.Join(" | ", cells)} | {rs / ps:F2} ({ps:E2} -> {rs:E2}) |");
        }
    return 0;
}
if (args.Length < 2) { Console.Error.WriteLine("usage: KvqStudy MODEL TEXT [SAMPLES] [LENGTH] [THREADS]"); return 2; }
int samples = args.Length > 2 ? int.Parse(args[2]) : 4, length = args.Length > 3 ? int.Parse(args[3]) : 2048;
int threads = args.Length > 4 ? int.Parse(args[4]) : 2;
const double fraction = 0.01;
using var loaded = ModelLoader.Load(args[0]);
var model = new Transformer(loaded.Weights, new Kvq.Tensors.Parallelism(threads));
var text = TextNormalizer.ReadNormalized(args[1]);
var tokens = loaded.Tokenizer.Encode(text, addBos: false);
var windows = CalibrationWindows.Choose(tokens, samples, length, loaded.Tokenizer.BosId, 0);
var acts = new FisherActivationSource().Collect(model, windows, 1, (d, t) => Console.Error.Write($"\rFisher {d}/{t}"));
Console.Error.WriteLine();
var shape = acts.Shape;
int n = acts.Tokens, heads = shape.KvHeads, dim = shape.HeadDim, kvDim = shape.KvDim;
int[] widths = [2, 3];
Console.WriteLine($"# {Path.GetFileName(args[1])}, {samples} x {length}, {n} tokens, Fisher, 1% outliers");
Console.WriteLine("| side | layer | bits | per layer | per head | head/layer | long k-means/layer |");
Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
var totals = new Dictionary<(string, int), double[]>();
for (int l = 0; l < shape.Layers; l++)
{
    foreach (var side in new[] { "values", "keys" })
    {
        var perHead = new WeightedHistogram[heads];
        for (int h = 0; h < heads; h++) perHead[h] = new WeightedHistogram();
        if (side == "values") AddValues(acts.Values[l], acts.ValueWeights![l], perHead);
        else AddKeys(acts.Keys[l], acts.KeyWeights![l], perHead);
        var all = new WeightedHistogram();
        foreach (var hh in perHead) all.Add(hh);
        foreach (int bits in widths)
        {
            ulong seed = 0 ^ ((ulong)l << 32) ^ ((ulong)bits << 16);
            double layer = WeightedKMeans1D.Fit(all.Cells(true), 1 << bits, seed, 3, 300).Objective;
            double head = 0;
            foreach (var hh in perHead) head += WeightedKMeans1D.Fit(hh.Cells(true), 1 << bits, seed, 3, 300).Objective;
            double longer = WeightedKMeans1D.Fit(all.Cells(true), 1 << bits, seed, 24, 5000).Objective;
            Console.WriteLine($"| {side} | {l} | {bits} | {layer:E3} | {head:E3} | {head / layer:F3} | {longer / layer:F4} |");
            if (!totals.TryGetValue((side, bits), out var t)) totals[(side, bits)] = t = new double[3];
            t[0] += layer; t[1] += head; t[2] += longer;
        }
    }
}
foreach (var ((side, bits), t) in totals)
    Console.WriteLine($"| {side} | all | {bits} | {t[0]:E3} | {t[1]:E3} | {t[1] / t[0]:F3} | {t[2] / t[0]:F4} |");
return 0;

void AddValues(float[] x, float[] w, WeightedHistogram[] hist)
{
    int k = KvQuantSpec.TokenOutliersPerTail(fraction, dim);
    var isOutlier = new bool[dim];
    var idx = new int[2 * k];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < heads; h++)
        {
            int off = (t * heads + h) * dim;
            var v = x.AsSpan(off, dim);
            var (min, max, _) = TokenOutliers.SplitBeyond(v, k, KvQuantSpec.ValueOutlierMargin, isOutlier, idx);
            if (!(max > min)) continue;
            var (_, zero, range) = TokenScale.Encode(min, max);
            for (int c = 0; c < dim; c++)
            {
                if (isOutlier[c]) continue;
                hist[h].Add((v[c] - zero) / range, (double)w[off + c] * range * range);
            }
        }
}

void AddKeys(float[] x, float[] w, WeightedHistogram[] hist)
{
    var column = new float[n];
    for (int h = 0; h < heads; h++)
        for (int c = 0; c < dim; c++)
        {
            int ch = h * dim + c;
            for (int t = 0; t < n; t++) column[t] = x[t * kvDim + ch];
            Array.Sort(column);
            var (zero, range) = KvQuantFitter.ChannelScale(column, fraction);
            for (int t = 0; t < n; t++)
            {
                float u = (x[t * kvDim + ch] - zero) / range;
                if (u > 1f || u < -1f) continue;
                hist[h].Add(u, (double)w[t * kvDim + ch] * range * range);
            }
        }
}
