using System.Security.Cryptography;
using System.Text;

namespace Kvq.Server;

/// <summary>Checks "Authorization: Bearer KEY" in constant time: both sides are hashed first, so neither the key's
/// content nor its length shows in the comparison's timing.</summary>
internal sealed class ApiKeyCheck(string key)
{
    private readonly byte[] _hash = SHA256.HashData(Encoding.UTF8.GetBytes(key));

    public bool IsValid(string? authorization)
    {
        const string scheme = "Bearer ";
        if (authorization == null || !authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        var given = SHA256.HashData(Encoding.UTF8.GetBytes(authorization.AsSpan(scheme.Length).Trim().ToString()));
        return CryptographicOperations.FixedTimeEquals(given, _hash);
    }
}
