// Sign-in: check the token against the API, learn whether it is a specialist's or a hospital's,
// keep it in sessionStorage and go to that person's page.
import { ApiError, api, getRole, getToken, setSession, setupChrome } from "./app.js";

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

/** Whose token is it? Specialists (and administrators) work the worklist; hospitals see
 * their studies. */
async function identify(token) {
  const me = await api("/ui-api/me", { token, signIn: false });
  const role = me.role === "hospital" ? "hospital" : "specialist";
  return { role, name: me.name, username: me.username };
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
      const { role, name, username } = await identify(token);
      setSession(token, role, name, username);
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
