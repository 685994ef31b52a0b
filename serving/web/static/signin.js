// Sign-in: check the token against the API, learn whether it is a specialist's or a hospital's,
// keep it in sessionStorage and go to that person's page.
import { ApiError, api, getRole, getToken, pick, setSession, setupChrome } from "./app.js";

const HOME = { specialist: "/ui/worklist", hospital: "/ui/hospital" };

function nextUrl(role) {
  const next = new URLSearchParams(location.search).get("next");
  // Only same-site paths of the pages; never an absolute URL.
  if (next && next.startsWith("/ui/") && !next.startsWith("//")) {
    const wantsSpecialist = next.startsWith("/ui/worklist") || next.startsWith("/ui/cases/");
    if ((role === "specialist") === wantsSpecialist) return next;
  }
  return HOME[role];
}

/** Whose token is it? A specialist can read the worklist; a hospital can list its own studies. */
async function identify(token) {
  try {
    const me = await api("/v1/me", { token, signIn: false });
    const role = pick(me, "role", "kind", "principal_kind");
    const name = pick(me, "display_name", "name", "username", "hospital.name");
    if (role === "specialist" || role === "admin") return { role: "specialist", name };
    if (role === "hospital" || role === "community" || role === "centre") return { role: "hospital", name };
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) throw error;
  }
  try {
    await api("/v1/worklist?limit=1", { token, signIn: false });
    return { role: "specialist", name: "" };
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401) throw error;
  }
  await api("/v1/studies?limit=1", { token, signIn: false });
  return { role: "hospital", name: "" };
}

function init() {
  setupChrome();
  if (getToken() && getRole()) {
    window.location.replace(nextUrl(getRole()));
    return;
  }
  const form = document.getElementById("signin-form");
  const input = document.getElementById("token");
  const error = document.getElementById("signin-error");
  const button = document.getElementById("signin-submit");
  if (new URLSearchParams(location.search).get("expired")) {
    error.textContent = "Your session has ended or the token was refused: sign in again.";
  }
  input.focus();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter your access token.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      const { role, name } = await identify(token);
      setSession(token, role, name);
      window.location.assign(nextUrl(role));
    } catch (err) {
      input.setAttribute("aria-invalid", "true");
      error.textContent = err instanceof ApiError && err.status === 401
        ? "This token was not accepted (unknown, expired or revoked)."
        : `Could not sign in: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

init();
