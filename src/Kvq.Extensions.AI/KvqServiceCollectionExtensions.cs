using Kvq.Extensions.AI;
using Kvq.Serving;
using Microsoft.Extensions.AI;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a <see cref="KvqChatClient"/> as the <see cref="IChatClient"/>; the returned builder composes
/// (e.g. <c>.UseOpenTelemetry()</c>, <c>.UseLogging()</c>).</summary>
public static class KvqServiceCollectionExtensions
{
    public static ChatClientBuilder AddKvqChatClient(this IServiceCollection services, InferenceEngine engine, IChatPrompt prompt,
        KvqChatClientOptions? options = null) =>
        services.AddChatClient(new KvqChatClient(engine, prompt, options));

    /// <summary>With a factory, e.g. one that takes the engine from the container.</summary>
    public static ChatClientBuilder AddKvqChatClient(this IServiceCollection services, Func<IServiceProvider, KvqChatClient> factory,
        ServiceLifetime lifetime = ServiceLifetime.Singleton) =>
        services.AddChatClient(sp => factory(sp), lifetime);
}
