using System.CommandLine;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Serving;
using Kvq.Tensors;

namespace Kvq.Cli.Commands;

/// <summary>
/// The options of commands that run an <see cref="InferenceEngine"/> for people (serve, chat): the model and its
/// device, the KV format and budget, the engine's concurrency, and the chat template. <see cref="Build"/> loads
/// everything or fails with one clear line.
/// </summary>
public sealed class EngineSetup
{
    public ModelOptions Model { get; } = new();
    public Option<string> Kv { get; } = new("--kv")
    {
        Description = "KV cache format (f16, q8_0, nuq3-1%, ...; see 'kvq eval --list'; auto: the smallest calibrated format within --max-ppl-increase)",
        DefaultValueFactory = _ => "f16",
    };
    public Option<double?> MaxPplIncrease { get; } = KvAuto.MaxPplIncrease();
    public Option<string?> Profile { get; } = KvProfileOptions.Profile();
    public Option<int?> Sink { get; } = KvProfileOptions.Sink();
    public Option<string> KvBudget { get; } = new("--kv-budget")
    {
        Description = "bytes the KV cache may hold, all requests together (e.g. 256MiB, 4GiB)",
        DefaultValueFactory = _ => "256MiB",
    };
    /// <summary>The most --max-concurrency takes (as bench serve's --max-running).</summary>
    public const int MaxConcurrencyCap = 65536;
    public Option<int> MaxConcurrency { get; } = new("--max-concurrency")
    {
        Description = "sequences generated at once (one batched step); more requests wait in the engine's queue",
        DefaultValueFactory = _ => 32,
    };
    public Option<string?> ChatTemplate { get; } = new("--chat-template")
    {
        Description = "a Jinja chat template file (default: the model's own, from GGUF or tokenizer_config.json)",
    };
    public Option<int> Threads { get; } = CommonOptions.Threads();
    public Option<string?> HostPrefixCache { get; } = new("--host-prefix-cache")
    {
        Description = "host memory for cached prompt prefixes the KV pool evicts (e.g. 2GiB): they are copied back instead of recomputed",
    };
    public Option<string?> PromptCache { get; } = new("--prompt-cache")
    {
        Description = "a folder that keeps the prefix cache across restarts: saved when the engine stops, restored when it starts",
    };
    public Option<int?> Ctx { get; } = Validation.ContextOption.Create("tokens a conversation or request may reach, prompt + answer");
    /// <summary>A token policy per request (each keeps at most its budget, so more long requests fit the pool).</summary>
    public KvPolicyOptions Policy { get; } = new(grid: false);
    public DeviceOptions Device { get; } = new();
    /// <summary>Swap preemption's tiers and the prefix cache's disk tier.</summary>
    public KvTierOptions Tiers { get; } = new();

    public void AddTo(Command cmd)
    {
        Model.AddTo(cmd);
        foreach (var o in new Option[] { Kv, MaxPplIncrease, Profile, Sink, KvBudget, MaxConcurrency, ChatTemplate, Threads, Ctx, PromptCache, HostPrefixCache }) cmd.Add(o);
        Policy.AddTo(cmd);
        Device.AddTo(cmd);
        Tiers.AddTo(cmd);
    }

    /// <summary>The loaded model, its engine and its chat prompt (null when the model has no template and none was given).</summary>
    public sealed class Built(LoadedModel loaded, ILanguageModel model, InferenceEngine engine, IChatPrompt? chat, string? chatMissing, string modelId) : IDisposable
    {
        public LoadedModel Loaded { get; } = loaded;
        public InferenceEngine Engine { get; } = engine;
        public IChatPrompt? Chat { get; } = chat;
        /// <summary>Why <see cref="Chat"/> is null.</summary>
        public string? ChatMissing { get; } = chatMissing;
        /// <summary>The model's file or folder name without extension: what clients call it.</summary>
        public string ModelId { get; } = modelId;

        public void Dispose()
        {
            Engine.Dispose();
            (model as IDisposable)?.Dispose();
            Loaded.Dispose();
        }
    }

    /// <summary>--kv-budget past what the pool can count (<see cref="KvPool.BudgetTooLargeCode"/>: its tokens are counted
    /// in 32 bits); 1000TiB was an unhandled OverflowException.</summary>
    internal static CliException BudgetTooLarge(string text, int blockTokens) =>
        new($"--kv-budget {text}: too large: the KV pool counts its {blockTokens}-token blocks in 32 bits; give a budget " +
            "within this machine's memory (e.g. 4GiB)");

    public Built Build(ParseResult r)
    {
        int threads = r.GetValue(Threads);
        if (threads < 1 || threads > 4 * Environment.ProcessorCount)
            throw new CliException($"--threads must be in 1..{4 * Environment.ProcessorCount} (got {threads})");
        int concurrency = r.GetValue(MaxConcurrency);
        if (concurrency is < 1 or > MaxConcurrencyCap) throw new CliException($"--max-concurrency must be in 1..{MaxConcurrencyCap} (got {concurrency})");
        long budget;
        try { budget = Bytes.Parse(r.GetValue(KvBudget)!); }
        catch (FormatException e) { throw new CliException($"--kv-budget: {e.Message}"); }
        var where = Device.Parse(r, [null]);
        // The engine's KV pool (its budget, prefix sharing, preemption and swap tiers) is host memory, which the CUDA
        // model does not attend over (it reads its own device caches): every request would fail in its first step.
        if (where.Cuda)
            throw new CliException("--device cuda: the serving engine (serve, chat) keeps its KV pool in host memory and runs the model " +
                                   "on the CPU for now; --device cuda is for generate, eval, recall and bench");
        var policy = Policy.Parse(r);
        if (policy.Count > 1) throw new CliException("--policy: give one token policy (the engine runs every request under it)");
        var templateFile = r.GetValue(ChatTemplate);
        if (templateFile != null && Directory.Exists(templateFile)) throw new CliException($"--chat-template {templateFile} is a directory: give a Jinja template file");
        if (templateFile != null && !File.Exists(templateFile)) throw new CliException($"--chat-template: '{templateFile}' not found");

        long hostPrefix = 0;
        if (r.GetValue(HostPrefixCache) is { } hostSize)
        {
            try { hostPrefix = Bytes.Parse(hostSize); }
            catch (FormatException e) { throw new CliException($"--host-prefix-cache: {e.Message}"); }
            if (hostPrefix <= 0) throw new CliException($"--host-prefix-cache: give a size above 0 (got {hostSize})");
            if (policy[0] != null) throw new CliException("--host-prefix-cache: prefixes under a token policy are shared in the KV pool only (no host tier yet)");
        }
        var tiers = Tiers.Parse(r, policy[0] != null);
        var cacheDir = r.GetValue(PromptCache);
        if (cacheDir != null && policy[0] != null)
            throw new CliException("--prompt-cache: prefixes under a token policy are shared in the KV pool only and cannot be saved yet");
        if (cacheDir != null && File.Exists(cacheDir)) throw new CliException($"--prompt-cache: '{cacheDir}' is a file; give a folder");
        // Now, not when the server stops: the cache is saved at stop, and a folder it cannot write lost it then.
        if (cacheDir != null) Validation.OutputFile.CheckFolder("--prompt-cache", cacheDir);

        var path = Model.Path(r);
        var loaded = ModelOptions.Load(path, r.GetValue(Model.Tokenizer));
        ILanguageModel? lm = null;
        try
        {
            int context = Validation.ContextOption.Resolve(r.GetValue(Ctx), loaded.Weights.Config);
            var profile = KvProfileOptions.Load(r.GetValue(Profile), loaded.Weights.Fingerprint);
            var config = KvProfileOptions.Config(r.GetValue(Kv)!, profile, r.GetValue(Sink), r.GetValue(MaxPplIncrease), loaded.Weights.Config.ContextLength) with { Policy = policy[0] };
            var (chat, missing) = ChatPromptSource.Load(templateFile, loaded);
            lm = where.Cuda ? where.Load(loaded.Weights, threads) : new Transformer(loaded.Weights, new Parallelism(threads), 256);
            if (where.Cuda) DeviceChoice.Check(lm, config);
            InferenceEngine engine;
            try
            {
                var store = cacheDir == null ? null
                    : new PromptCacheStore(cacheDir, ModelIdentity.Of(loaded).Session);
                engine = new InferenceEngine(lm, loaded.Tokenizer, tiers(new EngineOptions
                {
                    Kv = config, KvBudgetBytes = budget, MaxRunning = concurrency, ContextTokens = context, PromptCache = store, HostPrefixBytes = hostPrefix,
                }));
            }
            catch (EngineRequestException e) when (e.Code == KvPool.BudgetTooLargeCode)
            {
                throw BudgetTooLarge(r.GetValue(KvBudget)!, config.BlockTokens);
            }
            catch (EngineRequestException e)
            {
                throw new CliException($"--kv-budget: {e.Message}");
            }
            catch (KvSpecException e)
            {
                throw new CliException($"{(hostPrefix > 0 ? "--host-prefix-cache" : r.GetValue(Tiers.DiskPrefixCache) != null ? "--disk-prefix-cache" : "--kv")}: {e.Message}");
            }
            var id = Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(path));
            return new Built(loaded, lm, engine, chat, missing, id);
        }
        catch
        {
            (lm as IDisposable)?.Dispose();
            loaded.Dispose();
            throw;
        }
    }
}
