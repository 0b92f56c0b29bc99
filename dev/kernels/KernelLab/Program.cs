using System.Globalization;
using Kvq.Cuda;
using Kvq.Cuda.Attention;
using Kvq.KernelLab;

// Kernel lab: checks every decode-attention version against the CPU reference on random data, then times them at
// long contexts with bytes moved and achieved bandwidth. One process, one device; see dev/kernels/README.md.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
var opt = LabOptions.Parse(args);
try
{
    using var ctx = CudaContext.Create();
    var (nmaj, nmin) = NvrtcCompiler.Version();
    Console.WriteLine($"device: {ctx.Device}; nvrtc {nmaj}.{nmin}");
    var sw = System.Diagnostics.Stopwatch.StartNew();
    using var kernels = new DecodeKernels(ctx);
    using var versions = new DecodeKernelVersions(kernels);
    Console.WriteLine($"kernels: {sw.ElapsedMilliseconds} ms to compile/load (cache {kernels.Loader.Cache.Folder}: {kernels.Loader.Cache.Hits} hits, {kernels.Loader.Cache.Compiles} compiles)");
    foreach (var (kb, g, v, layout) in DecodeKernelVersions.Listed)
    {
        var k = versions.Attention(kb, kb, g, v, layout);
        Console.WriteLine($"  {k.Name}: {k.Registers} registers, {k.LocalBytes} B local, {k.StaticSharedBytes} B shared");
    }
    using var json = opt.Json != null ? new StreamWriter(opt.Json) : null;
    double copyBw = LabTimer.CopyBandwidth(ctx);
    Console.WriteLine($"copy bandwidth (read + write): {copyBw / 1e9:F0} GB/s");
    json?.WriteLine($"{{\"kind\":\"copy\",\"device\":\"{ctx.Device.Name}\",\"gbps\":{copyBw / 1e9:F1}}}");
    using var attn = new DecodeAttention(kernels);
    int failures = 0;
    var rows = new List<string>();
    foreach (var shape in (opt.CheckShapes ?? opt.Shapes).Concat(opt.Shapes).Distinct())
    {
        var profiles = SyntheticProfile.FitFormats(kernels, shape.KvHeads, LabOptions.SeedK, LabOptions.SeedV);
        if ((opt.CheckShapes ?? opt.Shapes).Contains(shape))
            foreach (var f in opt.Formats.Concat(opt.Formats.Where(f => f.Contains('@')).Select(f => Split(f).Cache)).Distinct())
                if (opt.CheckTokens > 0 && !Check(kernels, versions, attn, shape, f, profiles, opt.CheckTokens, json)) failures++;
        if (opt.Shapes.Contains(shape))
            foreach (long n in opt.Sizes)
                foreach (var f in opt.Formats)
                    rows.Add(Time(kernels, versions, attn, shape, f, profiles, n, copyBw, opt.Reps, json));
    }
    if (opt.CapacityTokens.Count > 0)
    {
        var profiles = SyntheticProfile.FitFormats(kernels, 32, LabOptions.SeedK, LabOptions.SeedV);
        using var blas = opt.Weights ? new CublasHandle(ctx) : null;
        if (blas != null)
        {
            double err = SevenB.CheckLinear(kernels, blas);
            bool ok = err < 1e-4;
            Console.WriteLine($"check cublas f16 x f16 -> f32 linear vs CPU double: rel L2 {err:E2}, tolerance 1E-004: {(ok ? "ok" : "FAIL")}");
            if (!ok) failures++;
        }
        using var model = blas != null ? new SevenB(kernels, blas, opt.CapacityLayers) : null;
        foreach (var f in opt.CapacityFormats)
            foreach (long n in opt.CapacityTokens)
                Capacity.Run(kernels, attn, profiles, f, n, opt.CapacityLayers, 5, json, model);
    }
    Console.WriteLine();
    Console.WriteLine("| shape | tokens | cache | us | MB read | GB/s | % of copy BW |");
    Console.WriteLine("|---|---:|---|---:|---:|---:|---:|");
    foreach (var r in rows) Console.WriteLine(r);
    if (failures > 0)
    {
        Console.Error.WriteLine($"{failures} check(s) FAILED");
        return 1;
    }
    return 0;
}
catch (CudaUnavailableException e)
{
    Console.Error.WriteLine($"skipped: {e.Message}");
    return 3;
}

// A format is f16, nuq4, nuq3 or nuq2 (= nuqB-1%: 4 key and 2 value outlier slots per token) or nuq4d, nuq3d,
// nuq2d (dense: no outlier slots, the CPU spec nuqB) or nuq4s, nuq3s, nuq2s (dense codes + per-chunk key outlier
// records: keys nuqB-0.1% capped at 47 per chunk, values nuqB), optionally @version of the nuq kernel (nuq4@1); no
// version = production's (DecodeKernels.NuqVersion; the dense and sparse layouts exist from v6 on; v10 and v15: 4 bits only).
// A ":N" after the version (nuq2d@9:3) plans the split-K for N blocks per SM instead of DecodeAttention's default.
static (string Cache, int Version) Split(string format)
{
    var parts = format.Split(':')[0].Split('@');
    var cache = parts[0];
    if (cache != "f16" && !LabOptions.NuqFormats.Contains(cache))
        throw new ArgumentException($"format {cache}: f16, {string.Join(", ", LabOptions.NuqFormats)}");
    return (cache, parts.Length > 1 ? int.Parse(parts[1]) : DecodeKernels.NuqVersion);
}

static int BlocksPerSm(string format) => format.Contains(':') ? int.Parse(format.Split(':')[1]) : DecodeAttention.DefaultBlocksPerSm;

static GpuLayerCache Build(DecodeKernels k, DecodeShape shape, string format, Dictionary<string, NuqLayerProfile> profiles, long n)
{
    var cache = Split(format).Cache;
    return cache == "f16"
        ? new F16LayerCache(k, shape, n, LabOptions.SeedK, LabOptions.SeedV, Math.Log2(10000))
        : new NuqLayerCache(k, shape, profiles[cache], n, LabOptions.Sink, LabOptions.SeedK, LabOptions.SeedV, LabOptions.Layout(cache));
}

static float[] RandomQuery(int heads, int seed)
{
    var rng = new Random(seed);
    var q = new float[heads * 128];
    for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1);
    return q;
}

static bool Check(DecodeKernels k, DecodeKernelVersions versions, DecodeAttention attn, DecodeShape shape, string format, Dictionary<string, NuqLayerProfile> profiles, long n, StreamWriter? json)
{
    var ctx = k.Context;
    attn.Split = versions.For(Split(format).Version);
    attn.BlocksPerSm = BlocksPerSm(format);
    using var cache = Build(k, shape, format, profiles, n);
    int sink = cache.Sink, positions = (int)(n + sink);
    var q = RandomQuery(shape.QueryHeads, 11);
    using var qd = ctx.Upload(q);
    using var outd = ctx.Allocate(shape.QueryHeads * 128 * 4);
    outd.Fill(0xff);   // NaN: an output the kernels forget stays visible
    attn.Run(cache, qd, outd);
    ctx.Synchronize();
    var got = outd.Download<float>(shape.QueryHeads * 128);
    var rawK = SyntheticProfile.Materialize(k, LabOptions.SeedK, shape.KvHeads, 0, positions);
    var rawV = SyntheticProfile.Materialize(k, LabOptions.SeedV, shape.KvHeads, 0, positions);
    var prof = Split(format).Cache == "f16" ? null : profiles[Split(format).Cache];
    // The CPU specs the GPU cache implements (f16, nuqB-1%, nuqB when dense; sparse: nuqB-0.1% keys capped per chunk,
    // nuqB values): their codecs decode the reference.
    var nuq = cache as NuqLayerCache;
    var (kd, vd) = CpuReference.DecodedCache(nuq?.KeySpec ?? "f16", prof, rawK, rawV, shape.KvHeads, positions, sink, nuq?.ValueSpec,
        nuq?.KeyListWords > 0 ? DecodeShape.KeyListWords - 1 : 0);
    var want = CpuReference.Attention(q, kd, vd, shape.KvHeads, shape.Group, positions);
    var (ke, ve) = CpuReference.Exact(rawK, rawV, shape.KvHeads, positions);
    var exact = CpuReference.Attention(q, ke, ve, shape.KvHeads, shape.Group, positions);
    var (rel, max) = CpuReference.Compare(got, want);
    var (qrel, _) = CpuReference.Compare(Array.ConvertAll(want, x => (float)x), exact);
    double Tolerance = DecodeKernelVersions.CheckTolerance(Split(format).Version, shape.Group);
    bool ok = rel <= Tolerance;
    Console.WriteLine($"check {Describe(shape)} {format} ({cache.Name}, {cache.BytesPerDecode / (double)(n * shape.KvHeads):F1} B per token and KV head) n={n} sink={sink}: rel L2 {rel:E2} (max abs {max:E2}) vs CPU codec reference, tolerance {Tolerance:E0}: {(ok ? "ok" : "FAIL")}; quantization error vs exact f32 {qrel:E2}");
    json?.WriteLine($"{{\"kind\":\"check\",\"shape\":\"{Describe(shape)}\",\"cache\":\"{format}\",\"tokens\":{n},\"rel\":{rel:E3},\"maxabs\":{max:E3},\"quant_rel\":{qrel:E3},\"ok\":{(ok ? "true" : "false")}}}");
    if (prof != null && cache is NuqLayerCache bulk) ok &= CheckAppend(k, shape, prof, bulk, n);
    return ok;
}

// The append path (a real model's: new tokens' K and V from a device buffer, in pieces that start and end inside
// tiles) must leave exactly the bytes the bulk encoder leaves.
static bool CheckAppend(DecodeKernels k, DecodeShape shape, NuqLayerProfile prof, NuqLayerCache bulk, long n)
{
    var ctx = k.Context;
    using var inc = new NuqLayerCache(k, shape, prof, n, bulk.Sink, bulk.Layout);
    inc.FillSyntheticSink(LabOptions.SeedK, LabOptions.SeedV);
    long at = 0;
    int[] pieces = [1, 7, 8, 100, 3, 13, 1];
    for (int i = 0; at < n; i++)
    {
        int c = (int)Math.Min(i < pieces.Length ? pieces[i] : 509, n - at);
        long total = (long)shape.KvHeads * c * 128;
        using var kb = ctx.Allocate(total * 4);
        using var vb = ctx.Allocate(total * 4);
        foreach (var (seed, dst) in new[] { (LabOptions.SeedK, kb), (LabOptions.SeedV, vb) })
        {
            using var a = new KernelArgs();
            a.Add(seed).Add(shape.KvHeads).Add(bulk.Sink + at).Add((long)c).Add(dst);
            k.Materialize().Launch(LaunchShape.Grid1((total + 255) / 256, 256), a);
        }
        inc.Append(kb, vb, c);
        at += c;
    }
    ctx.Synchronize();
    byte[] x = bulk.DownloadAll(), y = inc.DownloadAll();
    int diff = 0;
    for (int i = 0; i < x.Length; i++) if (x[i] != y[i]) diff++;
    bool ok = x.Length == y.Length && diff == 0;
    Console.WriteLine($"check {Describe(shape)} {bulk.Name} append in pieces of 1, 7, 8, 100, 3, 13, 1, 509...: {diff} of {x.Length} bytes differ from the bulk encoder: {(ok ? "ok" : "FAIL")}");
    return ok;
}

static string Time(DecodeKernels k, DecodeKernelVersions versions, DecodeAttention attn, DecodeShape shape, string format, Dictionary<string, NuqLayerProfile> profiles,
    long n, double copyBw, int reps, StreamWriter? json)
{
    var ctx = k.Context;
    attn.Split = versions.For(Split(format).Version);
    attn.BlocksPerSm = BlocksPerSm(format);
    // Rotate over enough copies of the layer that the 50 MB L2 cannot hold them: every pass reads from memory.
    var caches = new List<GpuLayerCache> { Build(k, shape, format, profiles, n) };
    long per = caches[0].DeviceBytes;
    int copies = (int)Math.Clamp((1L << 30) / per, 1, 32);
    for (int i = 1; i < copies; i++) caches.Add(Build(k, shape, format, profiles, n));
    using var qd = ctx.Upload(RandomQuery(shape.QueryHeads, 12));
    using var outd = ctx.Allocate(shape.QueryHeads * 128 * 4);
    ctx.Synchronize();
    double us = LabTimer.MedianMicroseconds(i => attn.Run(caches[i % caches.Count], qd, outd), 3, reps);
    long bytes = caches[0].BytesPerDecode;
    var plan = attn.Plan(caches[0]);
    long mem = caches[0].DeviceBytes;
    foreach (var c in caches) c.Dispose();
    double gbps = bytes / (us * 1e-6) / 1e9;
    json?.WriteLine($"{{\"kind\":\"time\",\"shape\":\"{Describe(shape)}\",\"cache\":\"{format}\",\"tokens\":{n},\"us\":{us:F2},\"bytes\":{bytes},\"gbps\":{gbps:F1},\"copy_frac\":{gbps * 1e9 / copyBw:F3},\"splits\":{plan.Splits},\"device_bytes\":{mem}}}");
    Console.WriteLine($"time {Describe(shape)} {format} n={n}: {us:F1} us, {bytes / 1e6:F1} MB, {gbps:F0} GB/s ({100 * gbps * 1e9 / copyBw:F0}% of copy), splits {plan.Splits}");
    return $"| {Describe(shape)} | {n} | {format} | {us:F1} | {bytes / 1e6:F1} | {gbps:F0} | {100 * gbps * 1e9 / copyBw:F0}% |";
}

static string Describe(DecodeShape s) => $"{s.QueryHeads}q/{s.KvHeads}kv";

sealed record LabOptions(List<DecodeShape> Shapes, List<string> Formats, List<long> Sizes, long CheckTokens, int Reps, string? Json,
    List<long> CapacityTokens, List<string> CapacityFormats, int CapacityLayers = 32, bool Weights = false, List<DecodeShape>? CheckShapes = null)
{
    public const uint SeedK = 0x1234567u, SeedV = 0x89abcdefu;
    public const int Sink = 1;
    public static readonly string[] NuqFormats = ["nuq4", "nuq3", "nuq2", "nuq4d", "nuq3d", "nuq2d", "nuq4s", "nuq3s", "nuq2s"];
    public static NuqLayout Layout(string cache) => cache.EndsWith('d') ? NuqLayout.Dense : cache.EndsWith('s') ? NuqLayout.SparseKeys : NuqLayout.Slots;

    public static LabOptions Parse(string[] args)
    {
        var o = new LabOptions([new DecodeShape(32, 1), new DecodeShape(8, 4)], ["f16", "nuq4", "nuq3", "nuq2"],
            [4096, 32768, 131072, 1048576], 4099, 30, null, [], ["nuq2"]);
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--sizes": { var v = Next(); o = o with { Sizes = v == "none" ? [] : v.Split(',').Select(long.Parse).ToList() }; break; }
                case "--formats": o = o with { Formats = Next().Split(',').ToList() }; break;
                case "--shapes": o = o with { Shapes = ParseShapes(Next()) }; break;
                case "--check-shapes": o = o with { CheckShapes = ParseShapes(Next()) }; break;   // default: the --shapes
                case "--check": o = o with { CheckTokens = long.Parse(Next()) }; break;
                case "--reps": o = o with { Reps = int.Parse(Next()) }; break;
                case "--json": o = o with { Json = Next() }; break;
                case "--capacity": o = o with { CapacityTokens = Next().Split(',').Select(long.Parse).ToList() }; break;
                case "--capacity-formats": o = o with { CapacityFormats = Next().Split(',').ToList() }; break;
                case "--capacity-layers": o = o with { CapacityLayers = int.Parse(Next()) }; break;
                case "--weights": o = o with { Weights = true }; break;
                default: throw new ArgumentException($"unknown option {args[i]}");
            }
        }
        foreach (var f in o.Formats.Concat(o.CapacityFormats)) if (f.Split('@')[0] is var c && c != "f16" && !NuqFormats.Contains(c))
            throw new ArgumentException($"format {f}: f16, {string.Join(", ", NuqFormats)} (optionally @version)");
        return o;
    }

    private static List<DecodeShape> ParseShapes(string v) =>
        v.Split(',').Select(s => s == "mha" ? new DecodeShape(32, 1) : s == "gqa" ? new DecodeShape(8, 4) : throw new ArgumentException($"shape {s}: mha or gqa")).ToList();
}
