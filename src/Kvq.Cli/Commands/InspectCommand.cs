using System.CommandLine;
using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cli.Validation;
using Kvq.Cuda.Distributed;
using Kvq.Formats.Gguf;
using Kvq.Model;

namespace Kvq.Cli.Commands;

/// <summary>kvq inspect: what is in a model file (metadata, tensors, parameters, memory).</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var path = new Argument<string?>("model") { Description = "model file (default: books-19m.gguf)", Arity = ArgumentArity.ZeroOrOne };
        var all = new Option<bool>("--all") { Description = "print long metadata arrays in full" };
        var kv = new Option<string?>("--kv") { Description = "also print the KV cache layout and memory of these specs (comma-separated)" };
        var ctx = ContextOption.Create("context length for the KV memory figures");
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var maxPpl = KvAuto.MaxPplIncrease();
        var gpus = CheckedOption.Int("--gpus", "with --kv: plan sequence parallelism over N GPUs (per GPU memory, tokens that fit; docs/multigpu.md)",
            0, ValueRange.AtLeast(0), "0 = off");
        var gpuGib = CheckedOption.Float("--gpu-gib", "with --gpus: memory of each GPU in GiB (an 80 GB H100 reports 79.18)", 79.18f, ValueRange.Above(0), null);
        var sliding = new KvSlidingOption();
        var shapeOpt = new Option<string?>("--shape")
        {
            Description = "plan for a built-in model shape instead of a file: llama-7b (32 layers, 32 heads x 128, FFN 11008, vocab 32000)",
        };
        var cmd = new Command("inspect", "print a model's metadata, tensor table, parameter count and memory; with --kv, the KV cache's layout and memory")
            { path, all, kv, ctx, profile, sink, maxPpl, gpus, gpuGib, shapeOpt, sliding.Option };
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            sliding.Check(r, [], offload: false, r.GetValue(sink), cuda: r.GetValue(gpus) > 0);
            if (r.GetValue(shapeOpt) is { } shapeName)
            {
                var shapeCfg = Shapes.Get(shapeName);
                var planSpecs = r.GetValue(kv) ?? throw new CliException("--shape: give the KV formats to plan with --kv (e.g. --kv f16,nuq2-1%,nuq2)");
                int planGpus = r.GetValue(gpus);
                if (planGpus < 1) throw new CliException("--shape plans sequence parallelism: give --gpus N (1 for one GPU)");
                PrintParallelPlan(shapeCfg, planSpecs, r.GetValue(ctx) ?? shapeCfg.ContextLength, planGpus, r.GetValue(gpuGib), spec => KvProfileOptions.Config(spec, null, r.GetValue(sink), contextTokens: shapeCfg.ContextLength), timed: true);
                return 0;
            }
            var file = DefaultPaths.ResolveModel(r.GetValue(path));
            var p = KvProfileOptions.Read(r.GetValue(profile));   // before any output: a bad one is one line
            // With a profile or --kv, the model loads first so another model's profile or a bad --kv spec is refused
            // before any table too (--kv bogus printed the whole model, then the error); without either the GGUF table
            // comes first, so a model that does not load (an unsupported architecture) still shows it.
            var specs = r.GetValue(kv);
            LoadedModel? early = p == null && specs == null ? null : ModelLoader.Load(file);
            Func<string, KvCacheConfig>? config = null;
            try
            {
                KvProfileOptions.EnsureModel(p, r.GetValue(profile), early?.Weights.Fingerprint ?? "");
                if (specs != null)
                {
                    var c = early!.Weights.Config;
                    // Each spec made once (--kv auto prints its choice as it is made) and planned once here.
                    var made = new Dictionary<string, KvCacheConfig>();
                    foreach (var spec in SplitSpecs(specs))
                    {
                        var one = sliding.Apply(r, KvProfileOptions.Config(spec, p, r.GetValue(sink), KvAuto.Is(spec) ? r.GetValue(maxPpl) : null, c.ContextLength));
                        KvLayoutPlan.Build(c.CreateKvShape(), one);
                        made[spec] = one;
                    }
                    config = spec => made[spec];
                }
            }
            catch
            {
                early?.Dispose();
                throw;
            }
            if (Formats.ModelSniffer.Detect(file).Format == Formats.ModelFormat.Gguf) PrintGguf(file, r.GetValue(all));
            using var loaded = early ?? ModelLoader.Load(file);
            PrintModel(loaded);
            if (p != null) PrintEstimates(p);
            if (specs != null && config != null)
            {
                PrintCache(loaded.Weights.Config, specs, r.GetValue(ctx) ?? loaded.Weights.Config.ContextLength, config);
                if (r.GetValue(gpus) > 0)
                    PrintParallelPlan(loaded.Weights.Config, specs, r.GetValue(ctx) ?? loaded.Weights.Config.ContextLength, r.GetValue(gpus), r.GetValue(gpuGib),
                        config, timed: false);
            }
            else if (r.GetValue(gpus) > 0) throw new CliException("--gpus plans the KV cache: give the formats with --kv");
            return 0;
        }));
        return cmd;
    }

    /// <summary>What --kv auto chooses from: each format the profile can estimate, its size and estimated perplexity increase.</summary>
    private static void PrintEstimates(KvQuantProfile p)
    {
        IReadOnlyList<KvAuto.Candidate> candidates;
        try
        {
            candidates = KvAuto.Candidates(p);
        }
        catch (CliException e)
        {
            Console.WriteLine($"profile: {e.Message}");
            return;
        }
        string margin = p.Settings.ValueMargin != KvQuantSpec.ValueOutlierMargin
            ? $", value codebooks fitted at outlier margin {p.Settings.ValueMargin} (nuq specs without :marginM split there)" : "";
        Console.WriteLine($"profile: {p.Settings.Samples} x {p.Settings.Length} tokens of {p.Settings.Text}{margin}; estimated perplexity increase " +
                          "per format, from its calibration errors (what --kv auto picks from):");
        foreach (var c in candidates)
            Console.WriteLine($"  {c.Spec,-22} {c.BitsPerElement,6:F2} bits/value  {(c.PplIncrease * 100).ToString("+0.###", System.Globalization.CultureInfo.InvariantCulture),8}%");        // A --rotate auto profile: which layers every nuq spec stores rotated.
        foreach (var cal in p.Calibrations.Where(c => c.RotatesAny))
        {
            static string L(int[] l) => l.Length == 0 ? "none" : string.Join(",", l);
            Console.WriteLine($"profile: {(cal.OutlierFraction == 0 ? "dense" : KvQuantSpec.FormatFraction(cal.OutlierFraction) + " outliers")}: " +
                              $"keys stored Hadamard-rotated in layers {L(cal.RotatedLayers(KvSide.Key))}, values in {L(cal.RotatedLayers(KvSide.Value))} (--rotate auto)");
        }
    }

    private static void PrintGguf(string file, bool all)
    {
        using var g = GgufFile.Open(file);
        Console.WriteLine($"file: {file} (GGUF v{g.Version}, {g.FileLength:N0} bytes, data at {g.DataStart})");
        Console.WriteLine($"metadata ({g.MetadataTypes.Count} keys):");
        foreach (var (key, type) in g.MetadataTypes)
            Console.WriteLine($"  {key,-45} {type,-8} {Format(g.Metadata[key], all)}");
        Console.WriteLine($"tensors ({g.Tensors.Count}):");
        Console.WriteLine($"  {"name",-32} {"type",-6} {"shape",-18} {"bytes",12} {"offset",12}");
        foreach (var t in g.Tensors)
            Console.WriteLine($"  {t.Name,-32} {t.Type,-6} {t.Shape,-18} {t.ByteSize,12:N0} {t.DataOffset,12}");
    }

    private static void PrintModel(LoadedModel m)
    {
        var c = m.Weights.Config;
        Console.WriteLine($"model: {c.Architecture}, {c.Layers} layers, dim {c.Dim}, heads {c.Heads} (kv {c.KvHeads}, head dim {c.HeadDim}), " +
                          $"ffn {c.FfnDim}, vocab {c.VocabSize}, rope {c.RopeStyle} base {c.RopeBase} scale {c.RopeScale}, context {c.ContextLength}");
        Console.WriteLine($"parameters: {m.Weights.ParameterCount:N0}; weight memory: {m.Weights.WeightBytes:N0} bytes ({m.Weights.WeightBytes / 1048576.0:F1} MiB)" +
                          (m.Weights.TiedOutput ? "; output tied to embedding" : ""));
        long kvPerToken = 2L * c.Layers * c.KvDim * 2;
        Console.WriteLine($"KV cache at f16: {kvPerToken:N0} bytes per token; {kvPerToken * c.ContextLength / 1048576.0:F1} MiB at {c.ContextLength} tokens");
        Console.WriteLine($"tokenizer: {m.Tokenizer.GetType().Name}, vocab {m.Tokenizer.VocabSize}, bos {m.Tokenizer.BosId}, eos {m.Tokenizer.EosId}");
        Console.WriteLine($"fingerprint: {m.Weights.Fingerprint}");
    }

    private static string[] SplitSpecs(string specs) =>
        specs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Layout of each spec's blocks and the bytes a sequence of <paramref name="ctx"/> tokens would hold
    /// (whole blocks, as allocated; staging and sink buffers are counted by eval memory), from each spec's layout plan.</summary>
    private static void PrintCache(ModelConfig c, string specs, int ctx, Func<string, KvCacheConfig> config)
    {
        var shape = c.CreateKvShape();
        Console.WriteLine($"KV cache at {ctx} tokens ({c.Layers} layers x {c.KvHeads} KV heads x head dim {c.HeadDim}, keys and values):");
        Console.WriteLine("| kv | block tokens | K bytes/block/head | V bytes/block/head | codes | scales | zeros | outliers+indices | bits/element | bytes/token | MiB at ctx |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var widths = new List<(string Name, string? Widths)>();
        var plans = new List<KvLayoutPlan>();
        foreach (var spec in SplitSpecs(specs))
        {
            var plan = KvLayoutPlan.Build(shape, config(spec));
            plans.Add(plan);
            widths.Add((plan.Config.Name, Widths(plan)));
            var k = plan.Keys.BlockLayout(0);
            var v = plan.Values.BlockLayout(0);
            var mem = plan.MemoryAt(ctx, expectedOutliers: true);   // KVQuant's sparse rows at the nominal rate
            var all = mem.Keys + mem.Values;   // layers may differ in width (:mixed): the plan sums them
            double bits = all.Total * 8.0 / (2.0 * ctx * c.Layers * c.KvDim);
            Console.WriteLine($"| {plan.Config.Name} | {plan.BlockTokens} | {k.Total} | {v.Total} | {all.Codes:N0} | {all.Scales:N0} | {all.Zeros:N0} | " +
                              $"{all.Outliers + all.Indices:N0} | {bits:F3} | {all.Total / (double)ctx:F1} | {all.Total / 1048576.0:F2} |");
        }
        foreach (var (name, w) in widths)
            if (w != null) Console.WriteLine($"{name}: layers differ ({w}); K/V bytes/block/head above are layer 0's");
        foreach (var plan in plans)
            if (LayerBlocks(plan, ctx) is { } lines)
                Console.WriteLine($"{plan.Config.Name}, {(plan.Config.SlidingRing ? "--sliding ring" : "--sliding full")}, blocks per layer at {ctx} tokens: {lines}");
    }

    /// <summary>Blocks and bytes each layer holds at <paramref name="ctx"/> tokens, layers of the same kind together
    /// (rings: at most ceil((window - 1) / B) + 1 blocks); null for a model without sliding-window layers.</summary>
    private static string? LayerBlocks(KvLayoutPlan plan, int ctx)
    {
        var shape = plan.Shape;
        if (shape.LayerWindows == null || !shape.LayerWindows.Any(w => w > 0)) return null;
        var groups = Enumerable.Range(0, shape.Layers)
            .GroupBy(l => (Window: shape.WindowOf(l), Blocks: plan.HeldBlocks(l, ctx), Bytes: plan.HeldBlocks(l, ctx) * plan.BytesPerLayerBlock(l)))
            .Select(g =>
            {
                string kind = g.Key.Window == 0 ? "global"
                    : plan.RingBlocks(g.First()) is { } ring ? $"window {g.Key.Window}, ring of at most {ring} blocks"
                    : $"window {g.Key.Window}, every token kept";
                return $"layers {Ranges(g.ToList())} ({kind}): {g.Key.Blocks} blocks, {g.Key.Bytes:N0} bytes each";
            });
        return string.Join("; ", groups);
    }

    /// <summary>"0-4,6-10" for [0,1,2,3,4,6,7,8,9,10].</summary>
    private static string Ranges(List<int> layers)
    {
        var parts = new List<string>();
        for (int i = 0; i < layers.Count;)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1) j++;
            parts.Add(i == j ? $"{layers[i]}" : $"{layers[i]}-{layers[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }

    /// <summary>Sequence-parallel capacity over <paramref name="gpus"/> GPUs (<see cref="CapacityPlan"/>): per GPU the fixed
    /// parts, then per format the KV bytes per GPU at <paramref name="ctx"/> tokens, whether that fits and how many tokens
    /// would; with <paramref name="timed"/> (the 7B shape, whose one-GPU rates are measured) the decode step's time model.</summary>
    private static void PrintParallelPlan(ModelConfig c, string specs, long ctx, int gpus, float gpuGib, Func<string, KvCacheConfig> config, bool timed)
    {
        const double GiB = 1 << 30;
        var plan = new CapacityPlan(c, gpus, (long)(gpuGib * GiB));
        Console.WriteLine($"sequence parallelism over {gpus} GPU{(gpus == 1 ? "" : "s")} of {gpuGib:F2} GiB, {ctx:N0} tokens " +
                          $"({ShardLayout.Even(ctx, gpus).Capacity[0]:N0} per GPU, whole 128-token blocks; docs/multigpu.md):");
        Console.WriteLine($"per GPU: weights (f16, replicated) {plan.WeightBytes / GiB:F2} GiB | activations ({plan.MaxBatch}-row chunk) " +
                          $"{plan.ActivationBytes / 1048576.0:F1} MiB | attention partials {plan.PartialBytes / 1048576.0:F1} MiB | gathered partials " +
                          $"{plan.StateBytes / 1024.0:F0} KiB | NCCL internal (assumed) {CapacityPlan.NcclInternalBytes / 1048576.0:F0} MiB | " +
                          $"context + libraries (assumed) {CapacityPlan.ReserveBytes / GiB:F1} GiB | total {plan.FixedBytes / GiB:F2} GiB");
        Console.WriteLine("| kv | device B/token | plan B/token | KV GiB per GPU at ctx | GiB per GPU at ctx | fits | tokens that fit |" +
                          (timed ? " step ms (weights + attention + combine) at ctx | tok/s |" : ""));
        Console.WriteLine("|---|---:|---:|---:|---:|---|---:|" + (timed ? "---:|---:|" : ""));
        foreach (var spec in specs.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var f = CapacityPlan.FormatBytes(c, config(spec));
            long kvBytes = plan.KvBytesPerGpu(f, ctx);
            long total = kvBytes + plan.FixedBytes;
            var line = $"| {f.Name} | {f.DeviceBytesPerToken:N0} | {(f.PlanBytesPerToken is { } pb ? pb.ToString("N0") : "-")} | {kvBytes / GiB:F2} | " +
                       $"{total / GiB:F2} | {(total <= plan.GpuBytes ? "yes" : "no")} | {plan.TokensThatFit(f):N0} |";
            if (timed)
            {
                var model = DecodeTimeModel.H100(f.Name);
                if (double.IsNaN(model.AttentionNsPerToken)) line += " - | - |";
                else
                {
                    var (att, comb, tot) = model.Step(c, ctx, gpus);
                    line += $" {model.WeightsMs:F2} + {att:F2} + {comb:F2} = {tot:F2} | {1000 / tot:F1} |";
                }
            }
            Console.WriteLine(line);
        }
        if (timed)
            Console.WriteLine($"time model: weights {DecodeTimeModel.H100WeightsMs7B} ms and attention per token from one H100 (docs/perf.md); combine per layer = " +
                              $"NCCL all-gather ({DecodeTimeModel.NcclLatencyUsH100x8} us + bytes at {DecodeTimeModel.NcclBusGBpsH100x8} GB/s, nccl-tests 8 x H100) " +
                              $"+ {DecodeTimeModel.CombineKernelsUsDefault} us of merge kernels");
    }

    /// <summary>Per-layer widths when the layers of a plan differ (KVQuant :mixed), else null: nominal bits for the
    /// nuq formats, stored bits per value for any other.</summary>
    private static string? Widths(KvLayoutPlan plan)
    {
        static string Bits(KvCodecSpec spec, KvCodec c) => spec switch
        {
            KvQuantSpec q => q.Bits.ToString(System.Globalization.CultureInfo.InvariantCulture),
            _ => c.BitsPerElement.ToString("F2", System.Globalization.CultureInfo.InvariantCulture),
        };
        int layers = plan.Shape.Layers;
        var k = Enumerable.Range(0, layers).Select(l => Bits(plan.Keys.LayerSpecs[l], plan.Keys.CodecOf(l))).ToArray();
        var v = Enumerable.Range(0, layers).Select(l => Bits(plan.Values.LayerSpecs[l], plan.Values.CodecOf(l))).ToArray();
        if (k.Distinct().Count() == 1 && v.Distinct().Count() == 1) return null;
        return $"key bits by layer {string.Join(",", k)}; value bits {string.Join(",", v)}";
    }

    private static string Format(object v, bool all)
    {
        if (v is string s) return s.Length > 80 && !all ? $"\"{s[..77]}...\"" : $"\"{s}\"";
        if (v is Array a)
        {
            var items = new List<string>();
            foreach (var x in a)
            {
                if (!all && items.Count == 8) { items.Add($"... ({a.Length} items)"); break; }
                items.Add(x is string xs ? $"\"{xs}\"" : Convert.ToString(x, System.Globalization.CultureInfo.InvariantCulture) ?? "");
            }
            return "[" + string.Join(", ", items) + "]";
        }
        return Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "";
    }
}
