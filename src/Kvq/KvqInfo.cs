using System.Reflection;

namespace Kvq;

/// <summary>kvq's version, from one place: &lt;Version&gt; in Directory.Build.props, stamped into every assembly as the
/// informational version ("0.1.0+commit"), which `kvq --version` prints too.</summary>
public static class KvqInfo
{
    /// <summary>The informational version: "0.1.0", with "+commit" when the build knew its source revision.</summary>
    public static string InformationalVersion { get; } =
        typeof(KvqInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    /// <summary>The version without the build metadata: "0.1.0".</summary>
    public static string Version => InformationalVersion.Split('+')[0];
}
