using BenchmarkDotNet.Attributes;
using Kvq.Cache;
using Kvq.Calibration.KvQuant;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// Managed bytes allocated per decode token of <see cref="Transformer"/> on books-19m after a 512-token prompt, 2
/// threads, with an f16 and a KVQuant nuq4-1% cache (profile: a forward-only calibration on tinyshakespeare, 4 windows
/// of 512). Each iteration starts a sequence from the prompt, whose full blocks the cache still holds from the first
/// run (prefix sharing), so setup runs the model over the last prompt token and one decode token; the benchmark then
/// decodes 64 greedy tokens (two blocks: per-block work such as prefix hashing is in the count).
/// BenchmarkDotNet's memory diagnoser reports "Allocated" per token (OperationsPerInvoke); <see cref="Quick"/> measures the
/// same loop with GC.GetTotalAllocatedBytes for a loaded machine.
/// </summary>
[MemoryDiagnoser(false)]
public class DecodeAllocations
{
    public const int PromptTokens = 512, Steps = 64;

    [Params("f16", "nuq4-1%")]
    public string Kv { get; set; } = "f16";

    private LoadedModel _loaded = null!;
    private Transformer _model = null!;
    private PagedKvCache _cache = null!;
    private int[] _prompt = null!;
    private float[] _logits = null!;
    private readonly int[] _one = new int[1];
    private PagedKvSequence? _seq;

    public static string ModelPath => Path.Combine(Shared, "models", "books-19m.gguf");
    private static string Shared => Environment.GetEnvironmentVariable("KVQ_SHARED") ?? "/work/shared";

    [GlobalSetup]
    public void Setup()
    {
        _loaded = ModelLoader.Load(ModelPath);
        _model = new Transformer(_loaded.Weights, new Parallelism(2));
        var config = KvCacheConfig.Parse(Kv);
        if (Kv.StartsWith("nuq", StringComparison.Ordinal))
        {
            var text = File.ReadAllText(Path.Combine(Shared, "text", "tinyshakespeare", "input.txt"));
            config = config with
            {
                Profile = KvQuantCalibrator.Calibrate(_model, text, "input.txt", _loaded.Tokenizer,
                    new KvQuantCalibrateOptions(Samples: 4, Length: 512, SinkTokens: 0, Threads: 2) { Fisher = false }).Profile,
            };
        }
        _cache = new PagedKvCache(_model.KvShape, config);
        var text2 = File.ReadAllText(Path.Combine(Shared, "text", "tinyshakespeare", "input.txt"));
        _prompt = _loaded.Tokenizer.Encode(text2[..20000], addBos: true)[..(PromptTokens + 1)];
        _logits = new float[_model.Config.VocabSize];
        using var first = _cache.CreateSequence(_prompt);
        _model.Forward(_prompt, first, _logits);
    }

    [IterationSetup]
    public void Start()
    {
        _seq?.Dispose();
        _seq = _cache.CreateSequence(_prompt);
        _model.Forward(_prompt.AsSpan(_seq.Length), _seq, _logits);
        // One decode token here: the sequence's token list (sized to the prompt) doubles at the first one, an
        // allocation of ~8 bytes per token amortised over a run rather than a per-token one.
        _one[0] = Argmax(_logits);
        _model.Forward(_one, _seq, _logits);
    }

    [Benchmark(OperationsPerInvoke = Steps)]
    public int Decode()
    {
        int token = 0;
        for (int s = 0; s < Steps; s++)
        {
            _one[0] = token = Argmax(_logits);
            _model.Forward(_one, _seq!, _logits);
        }
        return token;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _seq?.Dispose();
        _loaded.Dispose();
    }

    private static int Argmax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /// <summary>--decode-alloc [kv,kv] [rounds]: bytes per decode token (all threads), after warm-up rounds.</summary>
    public static void Quick(string[] kvs, int rounds)
    {
        Console.WriteLine($"books-19m, prompt {PromptTokens}, {Steps} decode tokens per round, 2 threads; " +
                          $"load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| kv | bytes/token (min over rounds) | bytes/token (first measured round) |");
        Console.WriteLine("|---|---:|---:|");
        foreach (var kv in kvs)
        {
            var b = new DecodeAllocations { Kv = kv };
            b.Setup();
            for (int w = 0; w < 5; w++) { b.Start(); b.Decode(); }
            double min = double.MaxValue, first = -1;
            for (int r = 0; r < rounds; r++)
            {
                b.Start();
                long before = GC.GetTotalAllocatedBytes(precise: true);
                b.Decode();
                double perToken = (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)Steps;
                if (first < 0) first = perToken;
                min = Math.Min(min, perToken);
            }
            Console.WriteLine($"| {kv} | {min:F0} | {first:F0} |");
            b.Cleanup();
        }
    }
}
