using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Kvq.Server.OpenAi;
using Kvq.Serving;
using Kvq.Tokenizers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Kvq.Server;

/// <summary>The routes, each a few lines: read the body, map it (<see cref="RequestMapper"/>), run it
/// (<see cref="GenerationRunner"/>) or answer from the engine's state. Plain request delegates, so the routing needs
/// no runtime code generation (NativeAOT).</summary>
internal sealed class Endpoints(InferenceEngine engine, KvqServerOptions options, RequestMapper mapper, GenerationRunner runner)
{
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>Every route and its one method, for <see cref="AllowedMethod"/> (/metrics is the Prometheus exporter's,
    /// which answers any method).</summary>
    private static readonly (string Method, string Path)[] Routes =
    [
        ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"), ("GET", "/v1/models/{id}"),
        ("GET", "/health"), ("POST", "/tokenize"), ("POST", "/detokenize"),
    ];

    public void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/chat/completions", ChatAsync);
        app.MapPost("/v1/completions", CompletionsAsync);
        app.MapGet("/v1/models", ctx => WriteAsync(ctx, new ModelList("list", [Card()]), OpenAiJson.Default.ModelList));
        app.MapGet("/v1/models/{id}", ctx =>
        {
            mapper.CheckModel(ctx.Request.RouteValues["id"] as string);
            return WriteAsync(ctx, Card(), OpenAiJson.Default.ModelCard);
        });
        app.MapGet("/health", Health);
        app.MapPost("/tokenize", TokenizeAsync);
        app.MapPost("/detokenize", DetokenizeAsync);
    }

    /// <summary>The method a route takes when <paramref name="path"/> is one of ours (null: no such route). The fallback
    /// answers a known path asked with another method 405 with this in <c>Allow</c> (routing's own 405 never comes: the
    /// fallback matches every method first). A {id} segment matches any one non-empty segment.</summary>
    public static string? AllowedMethod(string path)
    {
        var asked = path.TrimEnd('/').Split('/');
        foreach (var (method, route) in Routes)
        {
            var parts = route.Split('/');
            if (parts.Length != asked.Length) continue;
            bool match = true;
            for (int i = 0; i < parts.Length && match; i++)
                match = parts[i].StartsWith('{') ? asked[i].Length > 0 : string.Equals(parts[i], asked[i], StringComparison.OrdinalIgnoreCase);
            if (match) return method;
        }
        return null;
    }

    private async Task ChatAsync(HttpContext ctx)
    {
        var body = await JsonBody.ReadAsync(ctx, OpenAiJson.Default.ChatCompletionRequest, options.MaxRequestBodyBytes);
        var generation = mapper.Chat(body);
        await runner.RunAsync(ctx, generation, "messages", new ChatFormat(options.ModelId, engine.Tokenizer));
    }

    private async Task CompletionsAsync(HttpContext ctx)
    {
        var body = await JsonBody.ReadAsync(ctx, OpenAiJson.Default.CompletionRequestDto, options.MaxRequestBodyBytes);
        var generation = mapper.Completion(body);
        await runner.RunAsync(ctx, generation, "prompt", new TextFormat(options.ModelId, engine.Tokenizer));
    }

    private Task Health(HttpContext ctx)
    {
        bool stopping = ctx.RequestServices.GetService(typeof(Microsoft.Extensions.Hosting.IHostApplicationLifetime))
            is Microsoft.Extensions.Hosting.IHostApplicationLifetime { ApplicationStopping.IsCancellationRequested: true };
        ctx.Response.StatusCode = stopping ? 503 : 200;
        return WriteAsync(ctx, new HealthBody(stopping ? "stopping" : "ok"), OpenAiJson.Default.HealthBody);
    }

    private async Task TokenizeAsync(HttpContext ctx)
    {
        var body = await JsonBody.ReadAsync(ctx, OpenAiJson.Default.TokenizeRequest, options.MaxRequestBodyBytes);
        mapper.CheckModel(body.Model);
        int[] tokens;
        if (body.Messages != null)
        {
            if (body.Prompt != null) throw new ApiException(400, "give 'prompt' or 'messages', not both", "prompt");
            var prompt = options.ChatPrompt ?? throw new ApiException(400, $"the model '{options.ModelId}' has no chat template", "messages", "chat_template_missing");
            try
            {
                tokens = ChatPrompts.Encode(engine.Tokenizer, prompt.Render(mapper.Messages(body.Messages)));
            }
            catch (ChatPromptException e)
            {
                throw new ApiException(e.Refused ? 400 : 500, e.Message, "messages");
            }
        }
        else
        {
            var text = body.Prompt ?? throw new ApiException(400, "'prompt' is required", "prompt", "missing_required_parameter");
            bool special = body.AddSpecialTokens ?? true;
            tokens = engine.Tokenizer.Encode(text, addBos: special && engine.Tokenizer.AddBos, parseSpecial: true);
        }
        await WriteAsync(ctx, new TokenizeResponse(tokens, tokens.Length, engine.ContextTokens), OpenAiJson.Default.TokenizeResponse);
    }

    private async Task DetokenizeAsync(HttpContext ctx)
    {
        var body = await JsonBody.ReadAsync(ctx, OpenAiJson.Default.DetokenizeRequest, options.MaxRequestBodyBytes);
        mapper.CheckModel(body.Model);
        var tokens = body.Tokens ?? throw new ApiException(400, "'tokens' is required", "tokens", "missing_required_parameter");
        int vocab = engine.Model.Config.VocabSize;
        for (int i = 0; i < tokens.Length; i++)
            if ((uint)tokens[i] >= (uint)vocab)
                throw new ApiException(400, $"tokens[{i}] is {tokens[i]}, outside the vocabulary (0..{vocab - 1})", "tokens");
        await WriteAsync(ctx, new DetokenizeResponse(TokenDecoder.Decode(engine.Tokenizer, tokens)), OpenAiJson.Default.DetokenizeResponse);
    }

    private ModelCard Card() => new(options.ModelId, "model", _created, "kvq", engine.ContextTokens);

    private static Task WriteAsync<T>(HttpContext ctx, T value, JsonTypeInfo<T> type)
    {
        ctx.Response.ContentType = "application/json";
        return ctx.Response.Body.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(value, type)).AsTask();
    }
}
