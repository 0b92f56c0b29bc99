using Kvq.Chat;

namespace Kvq.Tests.Chat;

/// <summary>The chat template fixtures (Chat/Templates, copied beside the test binary) and a fixed clock.</summary>
internal static class ChatFixtures
{
    public static string Dir(string sub) => Path.Combine(AppContext.BaseDirectory, "Chat", sub);

    public static string TemplateSource(string name) => File.ReadAllText(Path.Combine(Dir("Templates"), name + ".jinja"));

    public static ChatTemplate Template(string name) => ChatTemplate.Parse(TemplateSource(name));

    /// <summary>strftime_now's clock stopped at <paramref name="utc"/>, with UTC as the local time zone.</summary>
    public static TimeProvider FixedClock(DateTimeOffset utc) => new StoppedClock(utc);

    private sealed class StoppedClock(DateTimeOffset utc) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => utc;
        public override TimeZoneInfo LocalTimeZone => TimeZoneInfo.Utc;
    }
}
