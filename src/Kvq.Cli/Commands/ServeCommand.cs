using System.CommandLine;
using Kvq.Cli.Validation;
using Kvq.Server;
using Kvq.Serving;

namespace Kvq.Cli.Commands;

/// <summary>kvq serve: an OpenAI-compatible HTTP server over one engine (docs/serving.md).</summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var setup = new EngineSetup();
        var host = new Option<string>("--host") { Description = "address to listen on; anything but loopback needs an API key", DefaultValueFactory = _ => "127.0.0.1" };
        // Parsed with the library's ranges (KvqServerOptions.Validate checks them again): "--port abc" named System.Int32.
        var port = CheckedOption.Int("--port", "port (0: any free one)", 8080, ValueRange.Between(0, KvqServerOptions.MaxPort));
        var apiKey = new Option<string?>("--api-key") { Description = "require 'Authorization: Bearer KEY' (default: $KVQ_API_KEY)" };
        var modelId = new Option<string?>("--model-id") { Description = "the name clients pass as \"model\" (default: the model file's name)" };
        var maxTokens = CheckedOption.Int("--max-tokens-limit", "most max_tokens a request may ask for (also its default)", 4096,
            ValueRange.Between(1, KvqServerOptions.MaxTokensLimitCap));
        var maxRequests = CheckedOption.Int("--max-requests", "generation requests in flight at most; more get 429", 256,
            ValueRange.Between(1, KvqServerOptions.MaxConcurrentRequestsCap));
        var maxBody = new Option<string>("--max-body") { Description = "largest request body", DefaultValueFactory = _ => "4MiB" };
        var timeout = CheckedOption.Int("--request-timeout", "seconds a generation request may take, streaming included", 600,
            ValueRange.Between(1, KvqServerOptions.MaxRequestTimeout.TotalSeconds), "seconds");
        var drain = CheckedOption.Int("--shutdown-timeout", "seconds a stop (SIGTERM, Ctrl-C) waits for in-flight requests", 10,
            ValueRange.Between(0, KvqServerOptions.MaxShutdownTimeout.TotalSeconds), "seconds");
        var cors = new Option<string[]>("--cors-origin") { Description = "allow browser calls from this origin (repeatable; default: no CORS)" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "log every request" };
        var cmd = new Command("serve", "serve the model over an OpenAI-compatible HTTP API")
        {
            host, port, apiKey, modelId, maxTokens, maxRequests, maxBody, timeout, drain, cors, verbose,
        };
        setup.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var key = r.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("KVQ_API_KEY");
            if (key is { Length: < 8 }) throw new CliException("--api-key: use at least 8 characters");
            long body;
            try { body = Bytes.Parse(r.GetValue(maxBody)!); }
            catch (FormatException e) { throw new CliException($"--max-body: {e.Message}"); }
            var options = new KvqServerOptions
            {
                ModelId = r.GetValue(modelId) ?? "(the model's name)",
                Host = r.GetValue(host)!,
                Port = r.GetValue(port),
                ApiKey = string.IsNullOrEmpty(key) ? null : key,
                MaxTokensLimit = r.GetValue(maxTokens),
                MaxConcurrentRequests = r.GetValue(maxRequests),
                MaxRequestBodyBytes = body,
                RequestTimeout = TimeSpan.FromSeconds(r.GetValue(timeout)),
                ShutdownTimeout = TimeSpan.FromSeconds(r.GetValue(drain)),
                CorsOrigins = r.GetValue(cors) ?? [],
                Verbose = r.GetValue(verbose),
            };
            // Every bound in its range before the model loads (a --request-timeout past a timer's reach failed each request).
            try { options.Validate(); }
            catch (ArgumentOutOfRangeException e) { throw new CliException(e.Message); }
            using var built = setup.Build(r);
            return Run(built, options with { ModelId = r.GetValue(modelId) ?? built.ModelId, ChatPrompt = built.Chat });
        }));
        return cmd;
    }

    private static int Run(EngineSetup.Built built, KvqServerOptions options)
    {
        KvqServer server;
        try { server = KvqServer.Create(built.Engine, options); }
        catch (ArgumentException e) { throw new CliException(e.Message); }
        try
        {
            try { server.StartAsync().GetAwaiter().GetResult(); }
            catch (IOException io) { throw new CliException($"cannot listen on {options.Host}:{options.Port}: {io.Message}"); }
            var e = built.Engine;
            Console.Error.WriteLine($"kvq serve: {options.ModelId} on {e.Model.Device}, KV {e.Options.Kv.Name} in {Bytes.Format(e.Pool.BudgetBytes)} " +
                                    $"({e.Pool.Blocks} blocks of {e.Pool.BlockTokens} tokens), context {e.ContextTokens}, " +
                                    $"chat {(options.ChatPrompt != null ? "on" : $"off ({built.ChatMissing}; --chat-template FILE)")}, " +
                                    $"API key {(options.ApiKey != null ? "required" : "off")}");
            if (e.Pool.Cache.HostPrefixes is { } host)
                Console.Error.WriteLine($"kvq serve: evicted prompt prefixes kept in up to {Bytes.Format(host.BudgetBytes)} of host memory");
            foreach (var (tier, swept, folder) in new[] { ("swap", e.Swap?.SweptFiles ?? 0, e.Options.SwapDirectory), ("prefix", e.PrefixDisk?.SweptFiles ?? 0, e.Options.PrefixDiskDirectory) })
                if (swept > 0)
                    Console.Error.WriteLine($"kvq serve: removed {swept} {tier} files a stopped kvq left in {folder ?? Path.GetTempPath()}");
            if (e.Options.PromptCache?.LastLoad is { } load)
            {
                Console.Error.WriteLine($"kvq serve: prompt cache {load.Folder}: {load.Prefixes} prefixes ({load.Tokens:N0} tokens) restored " +
                                        $"from {load.Files} files");
                foreach (var why in load.Skipped) Console.Error.WriteLine($"kvq serve: prompt cache: skipped {why}");
            }
            Console.Error.WriteLine($"kvq serve: listening on {server.BaseAddress} (Ctrl-C or SIGTERM to stop)");
            // Returns once a stop signal has come and in-flight requests drained (or were cut off at the bound).
            server.RunAsync().GetAwaiter().GetResult();
            Console.Error.WriteLine("kvq serve: stopped");
            e.Dispose();   // saves the prompt cache (with --prompt-cache)
            if (e.Options.PromptCache is { } store)
                Console.Error.WriteLine(store.SaveError is { } failed ? $"kvq serve: prompt cache not saved: {failed.Message}"
                    : store.LastSave is { } saved ? $"kvq serve: prompt cache: {saved.Prefixes} prefixes ({saved.Tokens:N0} tokens, " +
                                                    $"{Bytes.Format(saved.Bytes)}) saved to {saved.Folder}"
                    : "kvq serve: prompt cache: nothing saved");
            return 0;
        }
        finally
        {
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }
}
