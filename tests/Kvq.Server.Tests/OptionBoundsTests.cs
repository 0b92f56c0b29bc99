namespace Kvq.Server.Tests;

/// <summary>Every numeric bound of <see cref="KvqServerOptions"/> has a range, both ends: a value outside it is a typed
/// ArgumentOutOfRangeException naming kvq serve's option and the range when the server is made (a request timeout of
/// 2^31 seconds was accepted and failed every request with a 500: no timer waits that long).</summary>
public sealed class OptionBoundsTests
{
    private static KvqServerOptions With(KvqServerOptions o, string setting)
    {
        var (name, value) = (setting.Split('=')[0], long.Parse(setting.Split('=')[1], System.Globalization.CultureInfo.InvariantCulture));
        return name switch
        {
            "port" => o with { Port = (int)value },
            "tokens" => o with { MaxTokensLimit = (int)value },
            "requests" => o with { MaxConcurrentRequests = (int)value },
            "messages" => o with { MaxMessages = (int)value },
            "body" => o with { MaxRequestBodyBytes = value },
            "timeout" => o with { RequestTimeout = TimeSpan.FromSeconds(value) },
            "drain" => o with { ShutdownTimeout = TimeSpan.FromSeconds(value) },
            _ => throw new ArgumentException(setting),
        };
    }

    [Theory]
    [InlineData("port=70000", "--port 70000: expected 0..65535")]
    [InlineData("port=-1", "--port -1: expected 0..65535")]
    [InlineData("tokens=0", "--max-tokens-limit 0: expected 1..16777216")]
    [InlineData("tokens=2147483647", "--max-tokens-limit 2147483647: expected 1..16777216")]
    [InlineData("requests=0", "--max-requests 0: expected 1..65536")]
    [InlineData("requests=1000000", "--max-requests 1000000: expected 1..65536")]
    [InlineData("messages=0", "max messages 0: expected 1..1048576")]
    [InlineData("body=0", "--max-body 0: expected 1 byte..1 GiB")]
    [InlineData("body=1099511627776", "--max-body 1099511627776: expected 1 byte..1 GiB")]
    [InlineData("timeout=0", "--request-timeout 0: expected above 0 and at most 604800 seconds")]
    [InlineData("timeout=2147483647", "--request-timeout 2147483647: expected above 0 and at most 604800 seconds")]
    [InlineData("drain=-1", "--shutdown-timeout -1: expected 0..3600 seconds")]
    [InlineData("drain=86400", "--shutdown-timeout 86400: expected 0..3600 seconds")]
    public async Task AValueOutsideItsRangeIsRefusedWhenTheServerIsMade(string setting, string message)
    {
        var e = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => TestServer.StartAsync(o => With(o, setting)));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    /// <summary>The ends of each range are accepted: the server starts and answers.</summary>
    [Fact]
    public async Task TheEndsOfTheRangesAreAccepted()
    {
        await using var server = await TestServer.StartAsync(o => o with
        {
            MaxTokensLimit = KvqServerOptions.MaxTokensLimitCap,
            MaxConcurrentRequests = KvqServerOptions.MaxConcurrentRequestsCap,
            MaxMessages = 1,
            MaxRequestBodyBytes = KvqServerOptions.MaxRequestBodyCap,
            RequestTimeout = KvqServerOptions.MaxRequestTimeout,
            ShutdownTimeout = TimeSpan.Zero,
        });
        Assert.True((await server.Http.GetAsync("/health")).IsSuccessStatusCode);
    }
}
